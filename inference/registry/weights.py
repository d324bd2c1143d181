"""Traffic weights: the one rule set they obey, and where live weights are kept.

The same ``weight_problems`` judges a registry file at start and a live re-weighting, so a
table the file could not hold can never be set at run time either.

``WeightsBackend`` is the seam for a fleet: one process keeps weights in memory
(``InMemoryWeights``), while on Modal every container must read the weights one admin call set,
so the wiring keeps them in a ``modal.Dict`` behind this same two-method interface (one key per
model, so a model's weights are written as a unit: Modal applies each ``put`` atomically).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

from inference.registry.problems import did_you_mean, listed


def weight_problems(
    where: str, weights: Mapping[str, object], versions: Sequence[str]
) -> list[str]:
    """Each problem of ``weights`` (version -> weight) for a model with ``versions``.

    A weight is a finite number >= 0 (0 takes a version out of the split; a pin still reaches
    it), every name is a version of the model, and some weight is above 0, else a request that
    names the model could go nowhere.
    """
    problems = []
    for name, weight in weights.items():
        if name not in versions:
            problems.append(
                f"{where}: no version {name!r}{did_you_mean(name, versions)}; "
                f"its versions are {listed(versions)}"
            )
        elif isinstance(weight, bool) or not isinstance(weight, int | float):
            problems.append(f"{where}: weight of {name!r} must be a number, got {weight!r}")
        elif not math.isfinite(weight) or weight < 0:
            problems.append(
                f"{where}: weight of {name!r} must be a finite number >= 0, got {weight!r}"
            )
    if not problems and weights and not any(weights.values()):
        problems.append(
            f"{where}: all weights are 0, so a request for the model could go nowhere; "
            "give at least one version a weight above 0"
        )
    return problems


class WeightsBackend(Protocol):
    """Where live weights are kept: read by every router, written by re-weighting."""

    def get(self, model: str) -> Mapping[str, float] | None:
        """The model's stored weights (version -> weight), or None if never stored."""
        ...

    def put(self, model: str, weights: Mapping[str, float]) -> None:
        """Store the model's complete weights, replacing what was stored, as one write."""
        ...


class InMemoryWeights:
    """Weights in this process: the backend of a single server, and the fake Modal's is tested
    against (two registries sharing one instance behave like two containers)."""

    def __init__(self) -> None:
        self._weights: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> Mapping[str, float] | None:
        with self._lock:
            stored = self._weights.get(model)
            return dict(stored) if stored is not None else None

    def put(self, model: str, weights: Mapping[str, float]) -> None:
        with self._lock:
            self._weights[model] = dict(weights)
