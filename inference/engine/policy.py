"""When to stop waiting for company: the cost-aware batching rule, as pure functions and small
estimators the batcher feeds (no threads, no clock of their own, so tests drive them with
made-up times).

The rule. A call for n images costs about ``a + b x n`` seconds: a fixed part ``a`` (every
diffusion step launches the same kernels whatever the batch) and a per-image part ``b``.
Waiting ``g`` seconds for one more request idles the worker for ``g`` and spreads the fixed
part over one more image: per image, ``(g + a + b(n+1)) / (n+1)`` against ``(a + b n) / n`` now,
which is smaller exactly when ``n x g < a``. So the batcher waits while the gap it expects
before the next request is shorter than ``a / n``, the batch is not full, and the hold bound
(MAX_WAIT_MS) has not passed. The expected gap is the median of recent gaps between arrivals,
but never less than the silence since the last arrival or the last finished batch (clients
answered a moment ago tend to come back; once they are late, the burst is over).

Clients answered a moment ago come back no sooner than their turnaround: encoding, the
response, the client, the next request, which the batcher learns as the usual delay from a
batch's end to the first arrival after it (``Returns``). When that return is due only after the
hold bound, waiting cannot catch it and the batch goes at once: with 8 closed-loop clients
split into two groups (each queued while the other's call runs), the hold would otherwise idle
the device for the whole bound before every call, for nobody.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from inference.settings.engine import BatchPolicy

#: A model's declared cost: seconds for one call of ``batch_size`` images.
DeclaredCost = Callable[[int], float]

#: Recent calls per batch key that the cost fit uses; older ones age out as the load changes.
COST_SAMPLES = 32
#: Recent gaps between arrivals whose median is the expected gap.
ARRIVAL_SAMPLES = 16


@dataclass(frozen=True)
class Cost:
    """A call of n images costs ``fixed_s + per_image_s x n`` seconds."""

    fixed_s: float
    per_image_s: float


def fit_cost(samples: list[tuple[int, float]]) -> Cost | None:
    """Least squares over (batch size, seconds); None without samples.

    With one batch size only, the fixed part cannot be told from the per-image part, so the
    whole call counts as fixed: an upper bound, which errs on the side of waiting, and the
    hold bound caps what that costs until calls of another size separate the two.
    """
    if not samples:
        return None
    sizes = [float(n) for n, _ in samples]
    seconds = [s for _, s in samples]
    mean_n, mean_s = statistics.fmean(sizes), statistics.fmean(seconds)
    spread = sum((n - mean_n) ** 2 for n in sizes)
    if spread == 0:
        return Cost(fixed_s=mean_s, per_image_s=0.0)
    slope = sum((n - mean_n) * (s - mean_s) for n, s in samples) / spread
    slope = max(0.0, slope)
    return Cost(fixed_s=max(0.0, mean_s - slope * mean_n), per_image_s=slope)


def declared_cost(cost: DeclaredCost, max_batch: int) -> Cost:
    """A model's ``cost(batch_size)`` as a line through its values at 1 and ``max_batch``."""
    one, full = cost(1), cost(max_batch)
    per_image = (full - one) / (max_batch - 1) if max_batch > 1 else 0.0
    return Cost(fixed_s=max(0.0, one - per_image), per_image_s=max(0.0, per_image))


def expected_gap(typical_gap_s: float | None, silence_s: float) -> float:
    """Seconds until the next arrival: the typical gap, but at least the silence so far."""
    if typical_gap_s is None:
        return float("inf")
    return max(typical_gap_s, silence_s)


def wait_s(
    *,
    queued: int,
    max_batch: int,
    fixed_s: float,
    typical_gap_s: float | None,
    last_event: float,
    now: float,
    hold_until: float,
    returns_at: float = float("-inf"),
) -> float:
    """How long to wait before taking a batch of ``queued`` images now; 0: take it now.

    ``last_event`` is the later of the last arrival and the last finished batch; waiting ends
    at ``hold_until`` or when the silence since ``last_event`` reaches ``fixed_s / queued``,
    whichever is first (a new arrival wakes the caller to decide again). ``returns_at``: the
    earliest the callers of the last batch are expected back; at or after ``hold_until``,
    nobody is expected while waiting is allowed, so the batch goes now.
    """
    if queued >= max_batch or queued <= 0 or now >= hold_until or returns_at >= hold_until:
        return 0.0
    budget = fixed_s / queued  # the longest gap that one more image is worth
    if expected_gap(typical_gap_s, now - last_event) >= budget:
        return 0.0
    return max(0.0, min(hold_until, last_event + budget) - now)


class CostModel:
    """Each batch key's cost curve: the model's declared one, else fitted from its calls."""

    def __init__(self, declared: DeclaredCost | None = None, max_batch: int = 1) -> None:
        self._declared = declared_cost(declared, max_batch) if declared is not None else None
        self._samples: dict[Hashable, deque[tuple[int, float]]] = {}

    def record(self, key: Hashable, images: int, seconds: float) -> None:
        self._samples.setdefault(key, deque(maxlen=COST_SAMPLES)).append((images, seconds))

    def cost(self, key: Hashable) -> Cost | None:
        if self._declared is not None:
            return self._declared
        return fit_cost(list(self._samples.get(key, ())))


class Arrivals:
    """Recent gaps between arrivals (the arrival rate's inverse, robust to bursts)."""

    def __init__(self) -> None:
        self._gaps: deque[float] = deque(maxlen=ARRIVAL_SAMPLES)
        self.last: float | None = None

    def record(self, at: float) -> None:
        if self.last is not None:
            self._gaps.append(max(0.0, at - self.last))
        self.last = at

    def typical_gap(self) -> float | None:
        """The median gap; None until two gaps are known."""
        return statistics.median(self._gaps) if len(self._gaps) >= 2 else None


class Returns:
    """How long after a batch ends its callers' next requests start arriving: recent delays
    from a batch's end to the first arrival after it. Under open traffic that is
    an ordinary gap between arrivals; under closed-loop clients, their turnaround."""

    def __init__(self) -> None:
        self._delays: deque[float] = deque(maxlen=ARRIVAL_SAMPLES)
        self._ended: float | None = None  # a batch's end that no arrival has followed yet

    def batch_ended(self, at: float, first_arrival_after: float | None) -> None:
        """A batch ended at ``at``; ``first_arrival_after``: an arrival already queued since."""
        if first_arrival_after is None:
            self._ended = at
        else:
            self._delays.append(first_arrival_after - at)
            self._ended = None

    def arrived(self, at: float) -> None:
        if self._ended is not None and at >= self._ended:
            self._delays.append(at - self._ended)
            self._ended = None

    def due(self, last_done: float) -> float:
        """The earliest arrivals are expected back after the batch that ended at ``last_done``:
        the quickest recent return, so a hold that has caught one lately is kept; minus
        infinity until two delays are known."""
        if len(self._delays) < 2:
            return float("-inf")
        return last_done + min(self._delays)


__all__ = [
    "Arrivals",
    "BatchPolicy",
    "Cost",
    "CostModel",
    "DeclaredCost",
    "Returns",
    "fit_cost",
    "wait_s",
]
