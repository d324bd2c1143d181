"""What one benchmark run records: workloads, per-level results, ceilings, cold starts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


@dataclass(frozen=True)
class Workload:
    """One kind of request, sent unchanged by every client to every server."""

    name: str
    model: str  # the MODEL env var of every server
    width: int
    height: int
    steps: int
    env: tuple[tuple[str, str], ...] = ()  # extra env vars for every server (DEVICE, DTYPE)
    requests: int | None = None  # per level, when it differs from --requests (GPU: slow images)
    output_format: str = "png"

    def payload(self) -> dict[str, Any]:
        return {
            "prompt": PROMPT,
            "seed": 1234,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "output_format": self.output_format,
        }


@dataclass
class LevelResult:
    """One server at one concurrency level on one workload."""

    server: str
    workload: str
    concurrency: int
    requests: int
    images: int
    errors: int
    wall_s: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    error_samples: list[str] = field(default_factory=list)
    server_p50_ms: dict[str, float] = field(default_factory=dict)  # ours: queue/encode/total
    overhead_p50_ms: float | None = None  # ours: p50 of (latency - the server's inference_ms)
    client_cpu_ms_per_request: float | None = None  # the load driver's own CPU
    #: images/s of every repeat of this level; the row is the median repeat, and the spread of
    #: these is the noise band a verdict must clear
    images_per_s_runs: list[float] = field(default_factory=list)


@dataclass
class Ceiling:
    """The engine in-process: images/s at each batch size and the model-only call time."""

    workload: str
    images_per_s_by_batch: dict[int, float]
    best_batch: int
    images_per_s: float
    model_call_p50_ms: float  # one image, model.generate only: the floor of any latency


@dataclass
class ColdStart:
    label: str
    total_s: float | None
    import_s: float | None
    load_s: float | None
    warmup_s: float | None
    rest_s: float | None
    note: str = ""


@dataclass
class Report:
    command: str
    machine: dict[str, Any]
    config: dict[str, Any]
    levels: list[LevelResult] = field(default_factory=list)
    ceilings: list[Ceiling] = field(default_factory=list)
    cold_starts: list[ColdStart] = field(default_factory=list)
    gpu: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


# -- small helpers ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), the same definition as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean_batch_size(batch_sizes: Sequence[int]) -> float:
    """Images per model call, from the batch size each request reported.

    A batch of b images is reported by its b requests, so per-call mean = requests / sum(1/b).
    """
    if not batch_sizes:
        return math.nan
    return len(batch_sizes) / sum(1.0 / b for b in batch_sizes)
