"""The small protocol every model backend implements.

A backend loads once, refuses jobs it cannot run (``check``), says which jobs can share a call
(``batch_key``) and turns a list of jobs into images. Queueing, batching policy, timeouts and
HTTP live elsewhere (the engine, the app), so a backend is only model code.

Your own class can be served with ``MODEL=package.module:ClassName`` (``models.custom``); it is
checked against this protocol at start. Three extensions are optional, so a class written
against the first version of this protocol keeps working unchanged:

- ``generate(..., preview=...)``: accept the keyword to offer intermediate images while a batch
  runs (OpenAI's streamed ``partial_images``); see ``PreviewCallback``.
- ``ModelImage``: return it instead of a bare array to report what the model's own safety checker
  said about an image.
- ``revision`` and ``safety_checker`` attributes: the weights' identity (part of the result
  cache's key) and whether a safety checker runs (shown in GET /).

And two optional methods, outside the protocol: ``preload() -> bool`` reads the weights into
host memory without touching an accelerator (True if it did). Modal's adapter calls it before
the memory snapshot, so a restored container only moves tensors to the GPU in ``load()``; a
backend without it simply loads everything in ``load()``. ``cost(batch_size) -> seconds`` (or a
callable ``cost_model`` attribute) declares what one call of that many images takes; the
batcher's cost policy (BATCH_POLICY=cost, ``engine.policy``) then uses it instead of learning
the curve from the calls it makes, so it waits for company well from the first batch. Only its
shape matters (the fixed part, read off ``cost(1)`` and ``cost(MAX_BATCH_SIZE)``). A
``needs_warm_up = False`` attribute skips the engine's warm-up generation after ``load`` (a
model that computes elsewhere, ``models.remote``, has nothing local to warm).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from inference.schema import Defaults, Job

#: Called after each denoising step with (step, total_steps) so the engine can report progress.
ProgressCallback = Callable[[int, int], None]
#: Renders the batch's current state: one list of HxWx3 uint8 arrays (at the job's size) per job.
RenderPreview = Callable[[], list[list[np.ndarray]]]
#: Called after each step with (step, total_steps, render). The engine calls ``render`` only at
#: the steps some caller wants a preview of, and only during this call (the state moves on
#: afterwards), so a model pays for previews only when they are asked for.
PreviewCallback = Callable[[int, int, RenderPreview], None]
#: What GET / says about safety filtering: the model has no checker, runs it, or it was turned
#: off by the deployment (SAFETY_CHECKER=disable).
SafetyChecker = Literal["none", "kept", "disabled"]


@dataclass(frozen=True)
class ModelImage:
    """An image and its safety checker's verdict, for models that run one.

    ``nsfw`` is True when the checker flagged the image (diffusers then returns it blacked out),
    False when it passed, None when no checker ran. A bare array means None.
    """

    pixels: np.ndarray
    nsfw: bool | None = None


def per_job(jobs: Sequence[Job], images: list[Any]) -> list[list[Any]]:
    """A batch's images, in order, cut into one list per job (``job.num_outputs`` each)."""
    out: list[list[Any]] = []
    for job in jobs:
        out.append(images[: job.num_outputs])
        images = images[job.num_outputs :]
    return out


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
    ) -> list[list[np.ndarray | ModelImage]]:
        """One list of HxWx3 uint8 arrays (or ``ModelImage``) per job, ``job.num_outputs`` long.

        An image must depend only on its own job and seed, never on the rest of the batch.
        """
        ...
