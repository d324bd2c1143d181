"""A stand-in for a model on a fast accelerator: a call for n images costs a + b x n seconds.

The time is spent in ``time.sleep``, so the GIL is free and the host's cores are free, as they
are while a GPU computes: whatever the server does besides the model call (HTTP, JSON, queueing,
encoding) competes for the CPU exactly as it would next to a GPU. The images are photo-like
(``images.photo_like``: one of four, by seed), so PNG, JPEG and WebP cost what they cost on
real outputs; noise or flat colour would make encoding unrealistically slow or fast.

Served with ``MODEL=tools.bench.standin:StandInModel`` and ``STANDIN_COST=a=0.04,b=0.01``
(seconds). The variable is read only here, by the bench harness's servers; nothing in
``inference/`` knows it. The ideal throughput at batch size B is B / (a + b x B) images/s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Sequence

import numpy as np

from inference.models.base import ProgressCallback
from inference.schema import Defaults, Job
from inference.settings import Settings
from tools.bench.images import photo_like

ENV = "STANDIN_COST"
VARIANTS = 4


def parse_cost(text: str) -> tuple[float, float]:
    """'a=0.04,b=0.01' -> (0.04, 0.01); an error names the bad part and the expected form."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{ENV}: {part!r} is not key=seconds, e.g. a=0.04,b=0.01") from None
    if set(values) != {"a", "b"} or min(values.values()) < 0:
        raise ValueError(f"{ENV} must give a and b, seconds >= 0 (a=0.04,b=0.01), got {text!r}")
    return values["a"], values["b"]


def ideal_images_per_s(a: float, b: float, max_batch: int) -> float:
    """What the model alone does with every call full: B / (a + b x B)."""
    return max_batch / (a + b * max_batch)


class StandInModel:
    """The ``Model`` protocol over a sleep; batching amortises ``a`` exactly as on a GPU."""

    name = "stand-in"
    size_multiple = 8

    def __init__(self, a: float, b: float, size: int = 512) -> None:
        self.a, self.b, self.size = a, b, size

    @classmethod
    def from_settings(cls, settings: Settings) -> StandInModel:
        a, b = parse_cost(os.environ.get(ENV, "a=0.04,b=0.01"))
        return cls(a, b, settings.default_width or 512)

    @property
    def defaults(self) -> Defaults:
        return Defaults(steps=1, prompt_weight=1.0, width=self.size, height=self.size)

    def load(self) -> None:
        """Compute the images now, so no request pays for them."""
        for side in {self.size, 512}:
            for seed in range(VARIANTS):
                photo_like(side, seed)

    def check(self, job: Job) -> None:
        """Any size the schema allows."""

    def batch_key(self, job: Job) -> Hashable:
        return (job.width, job.height)

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        count = sum(job.num_outputs for job in jobs)
        time.sleep(self.a + self.b * count)
        if progress is not None:
            progress(1, 1)
        return [[self._image(job, seed) for seed in job.seeds] for job in jobs]

    def _image(self, job: Job, seed: int) -> np.ndarray:
        side = max(job.width, job.height)
        return photo_like(side, seed % VARIANTS)[: job.height, : job.width]
