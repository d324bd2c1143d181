"""Settings of the engine: dynamic batching, devices, back-pressure and the result cache."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

#: ``greedy``: the rule before the cost model (wait up to MAX_WAIT_MS from the oldest request's
#: arrival while traffic is concurrent); ``cost``: ``engine.policy``'s rule.
BatchPolicy = Literal["greedy", "cost"]

#: One device as torch names it: cpu, mps, cuda or cuda:N.
DEVICE_NAME = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


class EngineSettings(BaseModel):
    """MAX_BATCH_SIZE, MAX_WAIT_MS, BATCH_POLICY, DEVICES, the JPEG/WebP encoder knobs,
    MAX_QUEUE_SIZE, REQUEST_TIMEOUT_S and RESULT_CACHE_MB."""

    max_batch_size: int = Field(8, ge=1, le=256, description="Most images in one model call.")
    max_wait_ms: float = Field(
        10.0,
        ge=0,
        le=10_000,
        description="Longest the batcher holds a request back waiting for batch company: with "
        "BATCH_POLICY=cost, counted from when a device could have started it (its arrival, or "
        "the end of the batch before it); with greedy, from its arrival.",
    )
    batch_policy: BatchPolicy = Field(
        "cost",
        description="How long a batch waits for company while traffic is concurrent. 'cost': "
        "learns each batch shape's call time (a fixed part plus a per-image part, from its own "
        "calls, or the model's cost(batch_size)) and the gaps between arrivals, and waits "
        "while the next request is expected sooner than the fixed part divided by the images "
        "queued, up to MAX_WAIT_MS. 'greedy': the earlier rule, waiting up to MAX_WAIT_MS from "
        "the oldest request's arrival. A lone caller never waits under either.",
    )
    devices: str = Field(
        "",
        description="Devices to serve on, one model replica and worker each over one shared "
        "queue (a batch goes to whichever is free): a comma list such as 'cuda:0,cuda:1' "
        "(cpu, mps, cuda, cuda:N; a name may repeat, and a repeat is a device of its own that "
        "does not take turns with the first, as the benchmark's simulated devices need), or "
        "'auto' for every visible CUDA GPU "
        "(one device, DEVICE, when none is visible). Empty: one device, DEVICE.",
    )
    jpeg_quality: int = Field(
        90,
        ge=1,
        le=100,
        description="JPEG quality of results (1-100); lower is smaller and blurrier. 90 writes "
        "the bytes this server always wrote; above 95 grows files for little gain.",
    )
    webp_quality: int = Field(
        90,
        ge=0,
        le=100,
        description="WebP quality of results (0-100); lower is smaller and blurrier. 90 writes "
        "the bytes this server always wrote.",
    )
    webp_method: int = Field(
        4,
        ge=0,
        le=6,
        description="WebP encoder effort, 0 (fastest) to 6 (slowest, smallest); 4 is Pillow's "
        "default and what this server always used. Lower effort takes a fraction of the CPU "
        "per image for slightly larger files and changed pixels (BENCHMARKS.md measures each "
        "value): worth it where WebP encoding, not the model, limits throughput.",
    )
    max_queue_size: int = Field(
        64, ge=1, description="Requests waiting beyond this are refused with 503."
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="A request not finished by then fails with 504."
    )
    result_cache_mb: float = Field(
        64.0,
        ge=0,
        description="Memory for results of requests that give a seed (LRU, counted in encoded "
        "image bytes); 0 turns the cache off.",
    )

    @field_validator("devices")
    @classmethod
    def _devices_named(cls, value: str) -> str:
        value = value.strip()
        if value in ("", "auto"):
            return value
        names = [name.strip() for name in value.split(",")]
        bad = [name for name in names if not DEVICE_NAME.match(name)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))} is not a device; list cpu, mps, cuda or cuda:N "
                "separated by commas (DEVICES=cuda:0,cuda:1), or DEVICES=auto"
            )
        return ",".join(names)
