"""Settings of the engine: dynamic batching, back-pressure and the result cache."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EngineSettings(BaseModel):
    """MAX_BATCH_SIZE, MAX_WAIT_MS, MAX_QUEUE_SIZE, REQUEST_TIMEOUT_S and RESULT_CACHE_MB."""

    max_batch_size: int = Field(8, ge=1, le=256, description="Most images in one model call.")
    max_wait_ms: float = Field(
        10.0, ge=0, le=10_000, description="Longest a request waits for batch company."
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
