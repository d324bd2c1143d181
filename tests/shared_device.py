"""Models for versions that share one device: ``BusyModel`` and ``QuietModel`` record when
each call ran (``CALLS``: did two overlap, in which order were the versions served), and
``PreloadingModel`` where each load found its weights (``LOADS``: disk or host memory)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inference.models.base import ProgressCallback
from inference.models.mock import MockModel
from inference.schema import Job
from inference.settings import Settings
from tests.fakes import SleepyModel

#: (label, start, end) of every call of every recording model in this process, in end order.
CALLS: list[tuple[str, float, float]] = []
_calls_lock = threading.Lock()


class RecordingModel(SleepyModel):
    """The mock's pixels at 0.05 s a step, each call's start and end appended to ``CALLS``."""

    label = "recording"

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        start = time.perf_counter()
        try:
            return super().generate(jobs, progress)
        finally:
            with _calls_lock:
                CALLS.append((self.label, start, time.perf_counter()))


class BusyModel(RecordingModel):
    label = "busy"


class QuietModel(RecordingModel):
    label = "quiet"


#: Where each PreloadingModel.load() found its weights: "disk" or "host memory".
LOADS: list[str] = []


class PreloadingModel(MockModel):
    """The mock with a backend's host-memory tier (``preload()``, as the diffusers backend has):
    ``LOADS`` says whether each load read the weights or found them preloaded."""

    def __init__(self, weights_path: Path | None = None, settings: Settings | None = None) -> None:
        super().__init__(weights_path=weights_path, settings=settings)
        self.preloaded = False

    def preload(self) -> bool:
        self.preloaded = True
        return True

    def load(self) -> None:
        LOADS.append("host memory" if self.preloaded else "disk")
        super().load()
