"""The small protocol every model backend implements.

A backend loads once, refuses jobs it cannot run (``check``), says which jobs can share a call
(``batch_key``) and turns a list of jobs into images. Queueing, batching policy, timeouts and
HTTP live elsewhere (the engine, the app), so a backend is only model code.

One optional method, outside the protocol: ``preload() -> bool`` reads the weights into host
memory without touching an accelerator (True if it did). Modal's adapter calls it before the
memory snapshot, so a restored container only moves tensors to the GPU in ``load()``; a
backend without it simply loads everything in ``load()``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np

from inference.schema import Defaults, Job

#: Called after each denoising step with (step, total_steps) so the engine can report progress.
ProgressCallback = Callable[[int, int], None]


class Model(Protocol):
    #: Identifies the served model in results, logs and GET /.
    name: str
    #: Width and height must be multiples of this (8 or more); defaults are rounded to it.
    size_multiple: int

    @property
    def defaults(self) -> Defaults:
        """Values for request fields the client omitted."""
        ...

    def load(self) -> None:
        """Load weights; called once, before any ``generate``."""
        ...

    def check(self, job: Job) -> None:
        """Raise ``InvalidRequest`` naming the field if this model cannot run ``job``.

        The last stage of validation (``inference.validation``): called before the job is
        queued, so a job the model refuses never fails a batch of others.
        """
        ...

    def batch_key(self, job: Job) -> Hashable:
        """Jobs with equal keys may share one ``generate`` call. A pure function of the job."""
        ...

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        """One list of HxWx3 uint8 arrays per job, ``job.num_outputs`` long.

        An image must depend only on its own job and seed, never on the rest of the batch.
        """
        ...
