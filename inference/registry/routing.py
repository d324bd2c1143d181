"""Choosing a version of a model by traffic weight: at random, or by a sticky key.

A sticky key (a user or session id) uses weighted rendezvous hashing (Schindelhauer and
Schomaker, 2005): each version scores ``-weight / ln(u)`` with ``u`` in (0, 1) a hash of
(model, version, key), and the highest score wins. A version wins with probability
``weight / sum(weights)`` over keys, the same key always wins the same version while weights
stand, and a re-weight moves only the keys it must: raising one version's weight moves keys
onto it and from nowhere else, lowering it moves keys off it only, and a weight of 0 takes
all of its keys and nobody else's. The hash is BLAKE2b, not ``hash()``, so every process of a
fleet (each Modal container) maps a key to the same version.

A ``Split`` is immutable: re-weighting builds a new one and the registry swaps it in whole.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from types import MappingProxyType

_BITS = 52  # (h + 0.5) / 2**52 is exact in a float and never 0 or 1, so ln(u) < 0


@dataclass(frozen=True)
class Split:
    """One model's weights, ready to route: the versions above 0 and their running sums."""

    weights: Mapping[str, float]
    names: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> Split:
        """The split of ``weights`` (version -> weight, already checked; some above 0)."""
        live = [(name, float(weight)) for name, weight in weights.items() if weight > 0]
        return cls(
            weights=MappingProxyType({name: float(weight) for name, weight in weights.items()}),
            names=tuple(name for name, _ in live),
            cumulative=tuple(accumulate(weight for _, weight in live)),
        )

    def pick(self, rng: random.Random) -> str:
        """A version drawn with probability proportional to its weight."""
        point = rng.random() * self.cumulative[-1]
        index = bisect.bisect_right(self.cumulative, point)
        return self.names[min(index, len(self.names) - 1)]

    def sticky(self, model: str, key: str) -> str:
        """The version ``key`` lands on: the highest weighted rendezvous score."""
        return max(
            self.names,
            key=lambda name: -self.weights[name] / math.log(_unit(model, name, key)),
        )


def _unit(model: str, version: str, key: str) -> float:
    """A uniform number in (0, 1) fixed by (model, version, key), the same in every process."""
    data = "\x00".join((model, version, key)).encode("utf-8", "surrogatepass")
    digest = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return ((digest >> (64 - _BITS)) + 0.5) / (1 << _BITS)
