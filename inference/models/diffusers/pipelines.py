"""What the server reads off a diffusers pipeline: device and dtype choice, placing it on the
device, size rules, the authors' defaults, sampler names, and the conversion of its output to
pixels.

Plain functions of a pipeline object, so they are testable on the tiny random pipeline and the
model class (``inference.models.diffusers``) stays about serving.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import ModelLoadError
from inference.schema import Defaults
from inference.weights import download_command

log = logging.getLogger(__name__)

#: Scheduler names of the public API -> diffusers class and config overrides.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
    "dpm++_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def pick_device(requested: str) -> str:
    """``requested`` unless 'auto': cuda if available, then mps, then cpu."""
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("DEVICE=cuda but no CUDA GPU is visible; use DEVICE=auto or cpu")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise ModelLoadError("DEVICE=mps but MPS is not available; use DEVICE=auto or cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str) -> Any:
    """``requested`` unless 'auto': bfloat16 on CUDA where supported, float16 on other GPUs,
    float32 on CPU (half precision on CPU is slow or unsupported for many kernels)."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        # is_bf16_supported() is also true on pre-Ampere GPUs (T4, V100), by emulation: slow,
        # and cuDNN has no bf16 convolutions there. bf16 only from compute capability 8.0.
        native = torch.cuda.get_device_capability()[0] >= 8 and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def check_dtype(pipe: Any, dtype: Any, source: str) -> None:
    """The weights are in the dtype asked for (a diffusers that ignores ``dtype=`` would
    silently load float32: twice the memory, half the speed)."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    actual = getattr(denoiser, "dtype", dtype)
    if actual != dtype:
        raise ModelLoadError(
            f"model {source!r} loaded as {actual}, not the {dtype} asked for "
            "(DTYPE); upgrade diffusers to a release pyproject.toml allows"
        )


def place(pipe: Any, device: str, dtype: Any, source: str) -> set[str]:
    """Move the pipeline to ``device`` and check that it can serve here: it takes a text prompt
    and holds ``dtype``. Returns the parameters its call accepts; ``ModelLoadError`` if not."""
    try:
        pipe.to(device)
    except (RuntimeError, ValueError) as exc:  # out of memory, unsupported dtype
        raise ModelLoadError(f"cannot move model {source!r} to {device} as {dtype}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    accepts = set(inspect.signature(pipe.__call__).parameters)
    if "prompt" not in accepts:
        raise ModelLoadError(
            f"{type(pipe).__name__} from {source!r} takes no text prompt; "
            "this server serves text-to-image pipelines"
        )
    check_dtype(pipe, dtype, source)
    return accepts


def optimize(pipe: Any, device: str, *, torch_compile: bool, channels_last: bool) -> bool:
    """channels_last and torch.compile, CUDA only (elsewhere they cost more than they give);
    True if the denoiser is compiled (its LoRA adapters must then hot-swap)."""
    import torch

    if not (torch_compile or channels_last):
        return False
    if device != "cuda":
        log.warning("TORCH_COMPILE/CHANNELS_LAST apply on CUDA only; ignored on %s", device)
        return False
    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    if channels_last:
        for module in (getattr(pipe, "unet", None), getattr(pipe, "vae", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if torch_compile:
        # Compiled lazily on the first call, i.e. during the engine's warm-up; each new
        # batch size compiles once more (dynamic shapes after the first recompile).
        denoiser.compile()
        log.info("torch.compile enabled for the %s", denoiser_name)
    return torch_compile


def size_multiple(pipe: Any) -> int:
    """What width and height must be multiples of for ``pipe``.

    Latents are the image divided by the VAE's scale factor; transformer models cut latents into
    patches (SD3: 2x2) and FLUX packs 2x2 latents into one token, so both need a larger multiple.
    The schema already demands multiples of 8.
    """
    multiple = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    transformer = getattr(pipe, "transformer", None)
    patch = getattr(getattr(transformer, "config", None), "patch_size", None)
    if isinstance(patch, int) and patch > 1:
        multiple *= patch
    if hasattr(pipe, "_pack_latents"):
        multiple *= 2
    return max(multiple, 8)


def native_size(pipe: Any) -> tuple[int, int]:
    """The resolution the model was trained at: latent sample size times the VAE factor."""
    factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None) or 64
    if isinstance(sample, list | tuple):
        height, width = int(sample[0]), int(sample[1])
    else:
        height = width = int(sample)
    return width * factor, height * factor


def model_defaults(pipe: Any, name: str) -> Defaults:
    """The defaults the pipeline's authors chose, adjusted for distilled (few-step) models.

    ``__call__``'s own defaults say what the authors recommend (SD 7.5/50, SDXL 5.0/50,
    SD3 7.0/28, FLUX-dev 3.5/28). Distilled models are trained for guidance 0 and a few steps:
    SD-Turbo and SDXL-Turbo (one step), FLUX-schnell (no guidance embedding; four steps).
    """
    params = inspect.signature(pipe.__call__).parameters
    guidance = _default_number(params, "guidance_scale", 7.5)
    steps = int(_default_number(params, "num_inference_steps", 30))
    width, height = native_size(pipe)
    transformer = getattr(pipe, "transformer", None)
    guidance_embeds = getattr(getattr(transformer, "config", None), "guidance_embeds", None)
    if "turbo" in name.lower():
        guidance, steps = 0.0, 1
    elif type(pipe).__name__.startswith("Flux") and guidance_embeds is False:
        guidance, steps = 0.0, 4
    return Defaults(steps=steps, prompt_weight=float(guidance), width=width, height=height)


def _default_number(params: Any, name: str, fallback: float) -> float:
    param = params.get(name)
    if param is None or not isinstance(param.default, int | float) or param.default is None:
        return fallback
    return float(param.default)


def to_pixels(images: Any) -> list[np.ndarray]:
    """Pipeline output (float numpy in [0, 1], or PIL images) as HxWx3 uint8 arrays."""
    if isinstance(images, np.ndarray):
        scaled = (np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return [np.ascontiguousarray(image[..., :3]) for image in scaled]
    return [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images]


def load_pipeline(folder: Path, dtype: Any, source: str, revision: str | None) -> Any:
    """The pipeline in ``folder`` (safetensors, no network), or a ModelLoadError saying why."""
    import diffusers
    import transformers
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    # Per-file progress bars would flood a server's log; the load time is logged instead.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    kwargs: dict[str, Any] = {
        "use_safetensors": True,
        "local_files_only": True,
        "dtype": dtype,
    }
    try:
        try:
            return AutoPipelineForText2Image.from_pretrained(str(folder), **kwargs)
        except ValueError as exc:
            if "AutoPipeline" not in str(exc):
                raise
            # A pipeline class AutoPipeline does not map (a community or newer pipeline):
            # load it as what model_index.json says it is.
            return DiffusionPipeline.from_pretrained(str(folder), **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:
        hint = (
            f"; to refresh the download run: {download_command(source, revision)}"
            if not Path(source).expanduser().exists()
            else ""
        )
        raise ModelLoadError(
            f"cannot load diffusers pipeline {source!r} from {str(folder)!r}: "
            f"{type(exc).__name__}: {exc}{hint}"
        ) from exc


def ignores_negative_prompt(accepts: set[str], prompt_weight: float) -> str | None:
    """Why a pipeline taking ``accepts`` would silently ignore a negative prompt, or None."""
    if "negative_prompt" not in accepts:
        return "takes no negative_prompt;"
    if "true_cfg_scale" in accepts:  # FLUX: only with true CFG, which we don't run
        return "ignores negative_prompt (distilled guidance, no negative pass);"
    if prompt_weight <= 1:  # no classifier-free guidance, so no negative pass
        return (
            f"ignores negative_prompt at prompt_weight {prompt_weight:g} (it applies only "
            "above 1, with classifier-free guidance); raise prompt_weight or"
        )
    return None
