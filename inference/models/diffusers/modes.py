"""Image-to-image and inpainting for diffusers models: pipelines derived from the loaded one.

``from_pipe`` hands the loaded modules (UNet or transformer, VAE, text encoders) to the new
pipeline: no weights are read or copied, so serving three modes costs the memory of one. Each
derived pipeline is built once, the first time a job needs it, and a model that diffusers has
no such pipeline for is remembered as such, so its jobs are refused in ``check`` (422) rather
than failing a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from inference.schema import Job, Mode


class DerivedPipelines:
    """The image-to-image and inpainting pipelines over one loaded text-to-image pipeline."""

    def __init__(self) -> None:
        self._built: dict[Mode, Any] = {}  # the pipeline, or why there is none (a str)
        self._lock = threading.Lock()  # check() runs on request threads, generate on the worker

    def get(self, pipe: Any, mode: Mode) -> Any:
        """The pipeline for ``mode`` over ``pipe``'s components; ``ValueError`` if none."""
        with self._lock:
            if mode not in self._built:
                try:
                    self._built[mode] = _derive(pipe, mode)
                except ValueError as exc:
                    self._built[mode] = str(exc)
        built = self._built[mode]
        if isinstance(built, str):
            raise ValueError(built)
        return built


def _derive(pipe: Any, mode: Mode) -> Any:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    auto = AutoPipelineForInpainting if mode == "inpainting" else AutoPipelineForImage2Image
    derived = auto.from_pipe(pipe)
    derived.set_progress_bar_config(disable=True)
    return derived


def image_kwargs(jobs: Sequence[Job], accepts: set[str]) -> dict[str, Any]:
    """A call's per-image inputs (one init image, and mask, per generated image, as PIL images
    of the job's size) and its one strength. Image-to-image pipelines that take no width and
    height read the size from the images, which already have it."""
    from PIL import Image

    first = jobs[0]
    kwargs: dict[str, Any] = {
        "image": [Image.fromarray(j.image.pixels) for j in jobs if j.image for _ in j.seeds],
        "strength": first.strength,
    }
    if first.mask is not None:
        kwargs["mask_image"] = [
            Image.fromarray(j.mask.pixels, mode="L") for j in jobs if j.mask for _ in j.seeds
        ]
    if "width" in accepts:
        kwargs.update(width=first.width, height=first.height)
    return kwargs
