"""Fake models for engine tests: the mock sampler plus hooks to hold, fail or miscount calls."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inference.models.base import ModelImage, ProgressCallback
from inference.models.mock import MockModel
from inference.schema import Job
from inference.settings import Settings


class GatedModel(MockModel):
    """Records each call; a call waits for ``gate`` (open by default); "boom" prompts raise."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[list[Job]] = []
        self.steps_run = 0

    def hold(self) -> None:
        """Make the next call wait for ``gate``; ``entered`` tells when it has begun."""
        self.entered.clear()
        self.gate.clear()

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        self.calls.append(list(jobs))
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        if any("boom" in job.prompt for job in jobs):
            raise RuntimeError("boom: simulated CUDA out of memory")

        def counting(step: int, total: int) -> None:
            self.steps_run += 1
            if progress is not None:
                progress(step, total)

        return super().generate(jobs, counting)


class SlowStepsModel(MockModel):
    """Sleeps in every step, so a test can abandon a batch while it runs."""

    def __init__(self, step_s: float) -> None:
        super().__init__()
        self.step_s = step_s
        self.steps_run = 0

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        import time

        def slow(step: int, total: int) -> None:
            self.steps_run += 1
            time.sleep(self.step_s)
            if progress is not None:
                progress(step, total)

        return super().generate(jobs, slow)


class MiscountingModel(MockModel):
    """Returns one image too few: the engine must refuse the batch loudly."""

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        out = super().generate(jobs, progress)
        if any(job.prompt == "short" for job in jobs):
            out[0] = out[0][:-1]
        return out


class SleepyModel(SlowStepsModel):
    """The mock's pixels at 0.05 s a step on any machine, for servers whose requests must take a
    known time (``MODEL=tests.fakes:SleepyModel``): a fast, idle machine must not finish them
    before a test can signal or time them out."""

    def __init__(self, weights_path: Path | None = None, settings: Settings | None = None) -> None:
        super().__init__(step_s=0.05)
        self.weights_path = weights_path


class FlaggingModel(MockModel):
    """Reports each image whose seed is odd as flagged by a safety checker."""

    def generate(self, jobs, progress=None):  # type: ignore[no-untyped-def]
        outputs = super().generate(jobs, progress)
        seeds = [seed for job in jobs for seed in job.seeds]
        flags = iter([seed % 2 == 1 for seed in seeds])
        return [[ModelImage(pixels, next(flags)) for pixels in images] for images in outputs]
