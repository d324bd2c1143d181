"""Your own model, by example: a diffusers pipeline with a prompt rewriter and a watermark.

Custom Python around a model is what the built-in backends cannot give you: here every prompt
gets a house style appended before it reaches the pipeline, and every image gets a visible mark
in its bottom-right corner before it is encoded. Serve it on any runtime with

    MODEL=examples.watermarked:WatermarkedModel WEIGHTS_PATH=<diffusers folder or hub id> \\
        python -m inference serve

The class implements the protocol of ``inference/models/base.py`` by delegating to the built-in
``DiffusersModel``, so batching, the scheduler choice, previews and the safety checker behave as
they do for a plain pipeline; only ``check`` and ``generate`` add their own steps. Both steps are
pure functions of the job, as the protocol asks, so seeds reproduce images and the result cache
stays correct.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from inference.models.base import ModelImage, PreviewCallback, ProgressCallback, SafetyChecker
from inference.models.diffusers import DiffusersModel
from inference.schema import Defaults, Job
from inference.settings import Settings

#: Appended to every prompt: the "house style" of this deployment.
STYLE = "watercolor, soft light"
#: Used when WEIGHTS_PATH is unset: a small, fast pipeline.
DEFAULT_SOURCE = "stabilityai/sd-turbo"


def rewrite(prompt: str) -> str:
    """The prompt the pipeline sees: the user's, then the house style."""
    prompt = prompt.strip()
    return f"{prompt}, {STYLE}" if prompt else STYLE


def watermark(pixels: np.ndarray) -> np.ndarray:
    """A copy with a square of diagonal stripes, inverted, in the bottom-right corner."""
    out = pixels.copy()
    side = max(4, min(out.shape[0], out.shape[1]) // 8)
    y, x = np.mgrid[0:side, 0:side]
    stripes = (x + y) % 4 < 2
    corner = out[-side:, -side:]
    corner[stripes] = 255 - corner[stripes]
    return out


class WatermarkedModel:
    """A diffusers pipeline whose prompts are rewritten and whose images are watermarked."""

    def __init__(self, source: str, **options: Any) -> None:
        self.inner = DiffusersModel(source, **options)
        self.name = f"watermarked:{source}"

    @classmethod
    def from_settings(cls, settings: Settings) -> WatermarkedModel:
        """WEIGHTS_PATH names the pipeline; the diffusers settings apply as they would to it."""
        source = str(settings.weights_path) if settings.weights_path else DEFAULT_SOURCE
        return cls(
            source,
            revision=settings.model_revision,
            device=settings.device,
            dtype=settings.dtype,
            scheduler=settings.scheduler,
            offline=settings.hf_hub_offline,
            safety=settings.safety_checker,
        )

    # What the server reads off the model: all the pipeline's own.
    @property
    def size_multiple(self) -> int:
        return self.inner.size_multiple

    @property
    def defaults(self) -> Defaults:
        return self.inner.defaults

    @property
    def revision(self) -> str | None:
        return self.inner.revision

    @property
    def safety_checker(self) -> SafetyChecker | None:
        return self.inner.safety_checker

    def load(self) -> None:
        self.inner.load()

    def check(self, job: Job) -> None:
        self.inner.check(replace(job, prompt=rewrite(job.prompt)))

    def batch_key(self, job: Job) -> Hashable:
        return self.inner.batch_key(job)

    def generate(
        self,
        jobs: Sequence[Job],
        progress: ProgressCallback | None = None,
        preview: PreviewCallback | None = None,
    ) -> list[list[np.ndarray | ModelImage]]:
        rewritten = [replace(job, prompt=rewrite(job.prompt)) for job in jobs]
        outputs = self.inner.generate(rewritten, progress, preview)
        return [[_marked(image) for image in images] for images in outputs]


def _marked(image: np.ndarray | ModelImage) -> np.ndarray | ModelImage:
    """Watermark an image; one the safety checker blacked out stays as it is."""
    if isinstance(image, ModelImage):
        return image if image.nsfw else ModelImage(watermark(image.pixels), image.nsfw)
    return watermark(image)
