"""A model that runs in another process's engine: the stand-in a router serves a version with.

On Modal each registry version has its own pool of GPU containers, but HTTP arrives at one
pool (the default version's). For any other version that pool's fleet builds a ``Service`` over
this stand-in instead of the model: validation (the version's own limits and defaults), the
result cache, metrics and the protocols all run in the router as for a local version, and only
the validated jobs cross to the version's pool, whose engine batches them with everything else
it receives. Nothing here imports Modal: the adapter hands in a ``RemotePool``.

What crosses the hop: a ``Job`` one way, raw pixels (and safety flags) back, so no PNG is
decoded and encoded again on its way (the router encodes once, in the format the job asked
for). Each stand-in sends one job per call (``batch_key``): the pool does the batching, a job
the pool refuses fails only its own request, and several stand-ins over one pool (one per
"device", each with a device name of its own) keep several calls in flight at once.

Progress and previews cannot cross the hop: a remote version streams no previews, and its
progress jumps from nothing to done.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.models.base import Model, ModelImage, ProgressCallback, SafetyChecker
from inference.schema import Defaults, Job

#: One job's images and its safety checker's verdicts, as a pool sends them back.
Pixels = tuple[list[np.ndarray], list[bool | None]]


@dataclass(frozen=True)
class Description:
    """What a router needs of a model it does not load: what ``Model`` exposes besides
    ``generate``, read from the pool's loaded model (a diffusers model knows its defaults and
    size multiple only once its pipeline is loaded)."""

    name: str
    size_multiple: int
    defaults: Defaults
    revision: str | None
    safety_checker: SafetyChecker | None

    @classmethod
    def of(cls, model: Model) -> Description:
        return cls(
            name=model.name,
            size_multiple=model.size_multiple,
            defaults=model.defaults,
            revision=getattr(model, "revision", None),
            safety_checker=getattr(model, "safety_checker", None),
        )


class RemotePool(Protocol):
    """A version's pool as the adapter exposes it (blocking calls, safe from any thread)."""

    def describe(self) -> Description: ...

    def generate(self, jobs: list[Job]) -> list[Pixels]:
        """Each job's pixels, run through the pool's engine; raises ``InvalidRequest`` for a
        job the pool's model refuses, anything else for a pool that fails."""
        ...


class RemoteVersion:
    """One pool, described once and shared by every stand-in of the version."""

    def __init__(self, pool: RemotePool, device: str) -> None:
        self.pool = pool
        #: The device name of every stand-in: its own arbiter, never a local GPU's.
        self.device = device
        self._description: Description | None = None
        #: The ask in progress, which every stand-in loading meanwhile shares.
        self._asking: concurrent.futures.Future[Description] | None = None
        self._lock = threading.Lock()

    def description(self) -> Description:
        """The pool's description, asked once (the first load; the pool starts if it must).

        The stand-ins of one load (up to MAX_REMOTE_CALLS) all wait for the one ask in
        progress and share its answer or its failure: a pool that fails to start is asked
        again by the next load, not once per stand-in, one after the other."""
        with self._lock:
            if self._description is not None:
                return self._description
            asking, mine = self._asking, self._asking is None
            if asking is None:
                asking = self._asking = concurrent.futures.Future()
        if mine:
            try:
                found = self.pool.describe()
            except BaseException as exc:
                with self._lock:
                    self._asking = None
                asking.set_exception(exc)
                raise
            with self._lock:
                self._description, self._asking = found, None
            asking.set_result(found)
        return asking.result()


class RemoteModel:
    """The ``Model`` protocol over a ``RemoteVersion``; see the module docstring."""

    size_multiple = 8
    #: The engine skips its warm-up call: the pool's containers warm their own model, and a
    #: router must not spend a generation per stand-in to warm a network call.
    needs_warm_up = False

    def __init__(self, version: RemoteVersion, name: str, defaults: Defaults) -> None:
        """``name`` and ``defaults`` stand until ``load`` reads the pool's own."""
        self.version = version
        self.device = version.device
        self.name = name
        self.revision: str | None = None
        self.safety_checker: SafetyChecker | None = None
        self._defaults = defaults
        self._ids = itertools.count()

    @property
    def defaults(self) -> Defaults:
        return self._defaults

    def load(self) -> None:
        """No weights: the pool's description, so the router validates as the pool would."""
        found = self.version.description()
        self.name, self.size_multiple = found.name, found.size_multiple
        self._defaults, self.revision = found.defaults, found.revision
        self.safety_checker = found.safety_checker

    def check(self, job: Job) -> None:
        """Nothing beyond the router's limits: the pool's model checks the rest, per job."""

    def batch_key(self, job: Job) -> Hashable:
        """A key of its own for every job: one job per call (module docstring)."""
        return next(self._ids)

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray | ModelImage]]:
        """The jobs' images from the pool, run through its engine."""
        results = self.version.pool.generate(list(jobs))
        return [
            [
                ModelImage(pixels, nsfw)
                for pixels, nsfw in zip(images, flags or [None] * len(images), strict=True)
            ]
            for images, flags in results
        ]


def stand_ins(version: RemoteVersion, template: Model, count: int) -> list[RemoteModel]:
    """``count`` stand-ins for one pool, named and defaulted as ``template`` (the version's
    backend, built but never loaded) until they load the pool's description."""
    return [RemoteModel(version, template.name, template.defaults) for _ in range(count)]
