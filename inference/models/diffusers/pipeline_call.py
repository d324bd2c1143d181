"""One diffusers pipeline call for a batch: what a job may ask of it, its arguments, its step
callback, its images.

The model (``inference.models.diffusers``) loads the pipeline and picks, per batch, the one that
runs it, its sampler and its adapters; what the call can be asked, what goes into it and what
comes out are functions of the jobs and the pipeline's parameters, kept here so the model class
stays about loading and serving:

- A job the call could not run as asked is refused, naming the field, before it is queued: a
  size off the pipeline's multiple, a negative prompt it would silently ignore, a strength that
  leaves no denoising step. Otherwise one such job would fail its whole batch.
- One prompt and one ``torch.Generator`` per image, in the batch's order. diffusers draws each
  image's initial noise from its own generator, so an image depends on its seed, not on its
  neighbours. Generators live on cuda when the model does, else (mps included) on the CPU.
- ``callback_on_step_end`` reports progress and offers previews; the engine's progress callback
  raises once every caller of the batch has gone, which stops the pipeline between two steps.
  A preview renders the step's latents only when the engine asks for it.
- The output is checked to hold one image per prompt, and a kept safety checker's per-image
  verdicts come back as ``ModelImage.nsfw``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inference.errors import InvalidRequest
from inference.models.base import ModelImage, PreviewCallback, ProgressCallback, per_job
from inference.models.diffusers.modes import image_kwargs
from inference.models.diffusers.pipelines import ignores_negative_prompt, to_pixels
from inference.models.diffusers.previews import LatentPreviewer
from inference.schema import Job

log = logging.getLogger(__name__)


def check_arguments(job: Job, accepts: set[str], multiple: int, model: str, pipeline: str) -> None:
    """Refuse, naming the field, a size the call cannot take (not a multiple of ``multiple``)
    or a negative prompt it would silently ignore (``accepts``: the parameters of ``model``'s
    ``pipeline``)."""
    for field, value in (("width", job.width), ("height", job.height)):
        if value % multiple:
            lower = max(multiple, value - value % multiple)
            raise InvalidRequest(
                field,
                f"{field} must be a multiple of {multiple} for model {model!r}, got {value} "
                f"(try {lower} or {lower + multiple})",
            )
    if job.negative_prompt:
        why = ignores_negative_prompt(accepts, job.prompt_weight)
        if why:
            raise InvalidRequest(
                "negative_prompt", f"model {model!r} ({pipeline}) {why} omit negative_prompt"
            )


def check_strength(job: Job) -> None:
    """Refuse a strength that leaves the call no denoising step."""
    if int(job.steps * job.strength) < 1:
        raise InvalidRequest(
            "strength",
            f"strength {job.strength:g} with {job.steps} steps runs no denoising step "
            f"(steps x strength < 1); raise strength to at least {1 / job.steps:.3g} "
            "or raise steps",
        )


def call_kwargs(
    jobs: Sequence[Job], accepts: set[str], device: str | None, *, negatives: bool
) -> dict[str, Any]:
    """The call's arguments for ``jobs`` (one batch_key): per-image prompts and generators,
    the shared settings, negative prompts when the model takes them (``negatives``) and a job
    asks for one, and an image mode's init images and masks. ``accepts`` is the parameters of
    the pipeline that runs the call."""
    import torch

    first = jobs[0]
    generator_device = "cuda" if device == "cuda" else "cpu"  # mps: CPU generators
    kwargs: dict[str, Any] = {
        "prompt": [job.prompt for job in jobs for _ in job.seeds],
        "num_inference_steps": first.steps,
        "guidance_scale": first.prompt_weight,
        "width": first.width,
        "height": first.height,
        "generator": [
            torch.Generator(device=generator_device).manual_seed(seed)
            for job in jobs
            for seed in job.seeds
        ],
        "num_images_per_prompt": 1,
        "output_type": "np",
    }
    if negatives and any(job.negative_prompt for job in jobs):
        kwargs["negative_prompt"] = [job.negative_prompt for job in jobs for _ in job.seeds]
    if first.image is not None:
        del kwargs["width"], kwargs["height"]
        kwargs.update(image_kwargs(jobs, accepts))
    return kwargs


def step_callback(
    jobs: Sequence[Job],
    accepts: set[str],
    progress: ProgressCallback | None,
    preview: PreviewCallback | None,
    previewer: LatentPreviewer | None,
) -> Callable[[Any, int, Any, dict], dict] | None:
    """The call's ``callback_on_step_end``, or None when nobody listens or the pipeline has
    no such hook."""
    if not (progress or preview) or "callback_on_step_end" not in accepts:
        return None
    first = jobs[0]
    count = sum(len(job.seeds) for job in jobs)

    def on_step_end(p: Any, index: int, timestep: Any, tensors: dict) -> dict:
        total = int(getattr(p, "num_timesteps", None) or first.steps)
        log.debug("step %d/%d of a batch of %d images", index + 1, total, count)
        if progress is not None:
            progress(index + 1, total)  # raises when every caller has gone: stops here
        if preview is not None:
            preview(index + 1, total, lambda: _preview(previewer, jobs, tensors.get("latents")))
        return tensors

    return on_step_end


def _preview(
    previewer: LatentPreviewer | None, jobs: Sequence[Job], latents: Any
) -> list[list[np.ndarray]]:
    """The batch's latents as approximate pixels, per job (empty when it cannot preview)."""
    assert previewer is not None
    first = jobs[0]
    images = previewer.render(latents, first.width, first.height)
    return per_job(jobs, images) if images is not None else [[] for _ in jobs]


def read_images(output: Any, expected: int, *, judged: bool) -> list[np.ndarray | ModelImage]:
    """The call's images as pixels, ``expected`` of them; with the safety checker's verdict
    each when it ran (``judged``) and the pipeline reported one."""
    images: list[Any] = to_pixels(output.images)
    if len(images) != expected:
        raise ValueError(f"the pipeline returned {len(images)} images for {expected}")
    flags = getattr(output, "nsfw_content_detected", None)
    if judged and flags is not None:
        verdicts = zip(images, flags, strict=True)
        images = [ModelImage(pixels, bool(flag)) for pixels, flag in verdicts]
    return images
