"""Any diffusers text-to-image pipeline (SD 1.x/2.x, SDXL, SD-Turbo, SD3, FLUX) as a backend.

The pipeline comes from a local folder (``model_index.json``) or a hub id at a pinned revision,
always from safetensors: a pickle checkpoint can run code when it is loaded, so a folder whose
weights are pickles is refused rather than trusted. Device and dtype are chosen automatically
(cuda with bfloat16 where supported, else float16; mps with float16; cpu with float32).

Why requests map the way they do:

- One pipeline call per batch, built by ``pipeline_call``: one prompt and one ``torch.Generator``
  per image, so an image depends on its seed, not on its neighbours; batched and solo runs
  differ only by float rounding in batched matmuls.
- The pipeline takes one ``guidance_scale``, one size, one step count and one scheduler per call,
  so those make up ``batch_key``; requests that differ in them run in separate calls.
- ``check`` holds the job against the loaded model (size multiple, scheduler family, negative
  prompt support), so a request the model cannot run is refused with a named field before it
  is queued, instead of failing a whole batch later.
- LoRA adapters (``loras``) are loaded once each and switched per batch with diffusers' adapter
  API (``diffusers_lora``); the adapter set and scales are part of ``batch_key``. With
  TORCH_COMPILE=1 they hot-swap into the compiled denoiser instead (``hotswap``).
- Progress and previews (the latents through ``previews.LatentPreviewer``) go through the
  call's ``callback_on_step_end``, which stops the pipeline once every caller has gone.
- A pipeline's safety checker (SD 1.x ships one) is kept or removed at load, as SAFETY_CHECKER
  says; when kept, its verdict comes back per image (``ModelImage.nsfw``), so a blacked-out
  image is reported as flagged rather than passed off as a result. Previews are not offered
  while it is kept: they would show what the checker has not seen.
- Image-to-image and inpainting run pipelines derived from the loaded one with ``from_pipe``
  (same module objects, no second copy of the weights), built the first time a job needs one;
  a model diffusers has no such pipeline for refuses those jobs in ``check``. Mode and
  strength join ``batch_key``; init images and masks are per-image inputs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inference.errors import InvalidRequest
from inference.models.base import (
    ModelImage,
    PreviewCallback,
    ProgressCallback,
    SafetyChecker,
    per_job,
)
from inference.models.diffusers.diffusers_lora import PipelineAdapters
from inference.models.diffusers.modes import DerivedPipelines
from inference.models.diffusers.pipeline_call import (
    call_kwargs,
    check_arguments,
    check_strength,
    read_images,
    step_callback,
)
from inference.models.diffusers.pipelines import (
    load_pipeline,
    model_defaults,
    optimize,
    pick_device,
    pick_dtype,
    place,
    size_multiple,
)
from inference.models.diffusers.previews import LatentPreviewer
from inference.models.diffusers.samplers import Samplers
from inference.schema import Defaults, Job, Mode, Scheduler
from inference.settings import Settings
from inference.weights import check_safetensors, find_pipeline

log = logging.getLogger(__name__)

#: Shown before the model has loaded (GET / answers while a large model loads); replaced by the
#: pipeline's own defaults once it is loaded.
PROVISIONAL_DEFAULTS = Defaults(steps=30, prompt_weight=7.5, width=512, height=512)


class DiffusersModel:
    """A diffusers text-to-image pipeline behind the ``Model`` protocol."""

    def __init__(
        self,
        source: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        scheduler: Scheduler | None = None,
        torch_compile: bool = False,
        channels_last: bool = False,
        offline: bool = False,
        cache_dir: Path | None = None,
        safety: Literal["keep", "disable"] = "keep",
        settings: Settings | None = None,
    ) -> None:
        self.name = source
        self.source = source
        self.revision = revision
        self.requested_device = device
        self.requested_dtype = dtype
        self.default_scheduler = scheduler
        self.torch_compile = torch_compile
        self.channels_last = channels_last
        self.offline = offline
        self.cache_dir = cache_dir
        self.safety = safety
        self.safety_checker: SafetyChecker | None = None  # known once loaded
        self.previewer: LatentPreviewer | None = None
        self.device: str | None = None
        self.dtype: Any = None
        self.pipe: Any = None
        self.size_multiple = 8
        self._defaults = PROVISIONAL_DEFAULTS
        self.samplers = Samplers(scheduler)
        self._accepts: set[str] = set()
        self._empty_negative_special = False
        self._derived = DerivedPipelines()
        self.lora = PipelineAdapters(settings or Settings())
        self.adapters = self.lora.adapters
        self._host_pipe: tuple[Path, Any] | None = None  # preload()'s (folder, pipeline)

    @classmethod
    def from_settings(cls, settings: Settings) -> DiffusersModel:
        return cls(
            settings.model,
            revision=settings.model_revision,
            device=settings.device,
            dtype=settings.dtype,
            scheduler=settings.scheduler,
            torch_compile=settings.torch_compile,
            channels_last=settings.channels_last,
            offline=settings.hf_hub_offline,
            safety=settings.safety_checker,
            settings=settings,
        )

    @property
    def defaults(self) -> Defaults:
        return self._defaults

    # -- loading -----------------------------------------------------------------------------

    def preload(self) -> bool:
        """Read the weights into host memory without touching an accelerator; False if the
        dtype cannot be known yet (DTYPE=auto before a GPU is visible).

        Optional for backends (``models.base``): Modal calls it before its memory snapshot,
        so a restored container skips disk reads and deserialisation and ``load`` only copies
        tensors to the GPU. The dtype is the one ``load`` would pick, so pixels never change.
        """
        if self._host_pipe is not None or self.pipe is not None:
            return True
        dtype = self.requested_dtype
        if dtype == "auto":
            import torch

            device = self.requested_device
            if device == "auto" or (device == "cuda" and not torch.cuda.is_available()):
                log.info("DTYPE=auto needs the device: weights load after restore instead")
                return False
            dtype = str(pick_dtype("auto", device)).removeprefix("torch.")
        folder = find_pipeline(self.source, self.revision, self.cache_dir, self.offline)
        check_safetensors(folder)
        pipe = load_pipeline(folder, pick_dtype(dtype, "cpu"), self.source, self.revision)
        self._host_pipe = (folder, pipe)
        return True

    def load(self) -> None:
        """Find the weights, load the pipeline on the chosen device, read its defaults."""
        if self.pipe is not None:
            return
        self.device = pick_device(self.requested_device)
        self.dtype = pick_dtype(self.requested_dtype, self.device)
        if self._host_pipe is None:
            folder = find_pipeline(self.source, self.revision, self.cache_dir, self.offline)
            check_safetensors(folder)
            pipe = load_pipeline(folder, self.dtype, self.source, self.revision)
            self._host_pipe = (folder, pipe)
        (folder, pipe), self._host_pipe = self._host_pipe, None
        self._apply_safety_setting(pipe)
        self._accepts = place(pipe, self.device, self.dtype, self.source)
        compiled = optimize(
            pipe, self.device, torch_compile=self.torch_compile, channels_last=self.channels_last
        )
        self.samplers.attach(pipe, self.source)
        self._empty_negative_special = bool(pipe.config.get("force_zeros_for_empty_prompt"))
        self.size_multiple = size_multiple(pipe)
        self._defaults = model_defaults(pipe, self.source)
        self.previewer = LatentPreviewer(pipe)
        self.lora.attach(pipe, self.source, compiled=compiled)
        self.pipe = pipe
        log.info(
            "loaded %s from %s on %s (%s); defaults %s; sizes multiple of %d",
            type(pipe).__name__,
            folder,
            self.device,
            str(self.dtype).removeprefix("torch."),
            self._defaults,
            self.size_multiple,
        )

    def _apply_safety_setting(self, pipe: Any) -> None:
        """Keep or drop the pipeline's safety checker, as SAFETY_CHECKER says; note which."""
        if getattr(pipe, "safety_checker", None) is None:
            self.safety_checker = "none"
        elif self.safety == "disable":
            pipe.safety_checker = None
            self.safety_checker = "disabled"
            log.warning("the safety checker of %r is disabled (SAFETY_CHECKER)", self.source)
        else:
            self.safety_checker = "kept"

    # -- serving -----------------------------------------------------------------------------

    def batch_key(self, job: Job) -> Hashable:
        """Size, steps, guidance, sampler, mode and strength: what one pipeline call takes once
        for all its images."""
        negative = bool(job.negative_prompt) if self._empty_negative_special else None
        return (
            job.width,
            job.height,
            job.steps,
            job.prompt_weight,
            self.samplers.name(job),
            negative,
            job.mode,
            job.strength,
            job.loras,
        )

    def pipeline(self, mode: Mode) -> Any:
        """The pipeline that serves ``mode``; raises ``InvalidRequest`` when the model has none."""
        if mode == "text-to-image":
            return self.pipe
        try:
            return self._derived.get(self.pipe, mode)
        except ValueError as exc:
            field = "mask" if mode == "inpainting" else "image"
            raise InvalidRequest(
                field,
                f"model {self.name!r} ({type(self.pipe).__name__}) has no {mode} pipeline in "
                f"diffusers ({exc}); omit {field}",
            ) from None

    def check(self, job: Job) -> None:
        """Refuse, naming the field, a job the loaded pipeline cannot run as asked."""
        if self.pipe is None:  # not loaded: the engine refuses the job as not ready anyway
            return
        pipeline = type(self.pipe).__name__
        check_arguments(job, self._accepts, self.size_multiple, self.name, pipeline)
        if job.strength is not None:
            self.pipeline(job.mode)
            check_strength(job)
        self.lora.check(job.loras)
        self.samplers.check(job, self.name)

    def compatible_schedulers(self) -> list[str]:
        """The API's scheduler names this pipeline can use (its scheduler's family)."""
        return self.samplers.compatible()

    def generate(
        self,
        jobs: Sequence[Job],
        progress: ProgressCallback | None = None,
        preview: PreviewCallback | None = None,
    ) -> list[list[np.ndarray | ModelImage]]:
        import torch

        if self.pipe is None:
            raise RuntimeError("DiffusersModel.generate called before load()")
        keys = {self.batch_key(job) for job in jobs}
        if len(keys) != 1:
            raise ValueError(f"a batch must share one batch_key, got {sorted(map(str, keys))}")
        first = jobs[0]
        pipe = self.pipeline(first.mode)
        accepts = set(inspect.signature(pipe.__call__).parameters)
        kwargs = call_kwargs(
            jobs, accepts, self.device, negatives="negative_prompt" in self._accepts
        )
        judged = self.safety_checker == "kept"
        if judged:
            preview = None  # a preview would show what the checker has not judged
        on_step_end = step_callback(jobs, accepts, progress, preview, self.previewer)
        if on_step_end is not None:
            kwargs["callback_on_step_end"] = on_step_end
        self.lora.activate(first.loras)
        pipe.scheduler = self.samplers.fresh(first)
        with torch.inference_mode():
            output = pipe(**kwargs)
        return per_job(jobs, read_images(output, len(kwargs["prompt"]), judged=judged))
