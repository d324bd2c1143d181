"""Result encoding: a job's pixels into the ``GenerateResult`` every front door returns.

It runs on the caller's side of the queue (a thread of the caller's or the encoding pool, never
the engine worker), so encoding one batch's images overlaps the model call of the next.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from inference import codec
from inference.results import GeneratedImage, GenerateResult, Timings
from inference.schema import Job


@dataclass
class Output:
    """What the engine worker hands back for one job: raw pixels and where the time went."""

    pixels: list[np.ndarray]
    batch_images: int
    queue_s: float
    inference_s: float
    #: The model's safety checker's verdict per image (None: no checker ran).
    nsfw: list[bool | None] = field(default_factory=list)


def encode_result(
    job: Job,
    output: Output,
    model: str,
    started: float,
    lossy: codec.LossyEncoding = codec.DEFAULT_LOSSY,
) -> GenerateResult:
    """Encode each image in the job's format; ``started`` is the submission's monotonic time,
    ``lossy`` the deployment's JPEG/WebP settings."""
    encode_started = time.monotonic()
    spec = codec.FORMATS[job.output_format]
    nsfw = output.nsfw or [None] * len(output.pixels)
    images = [
        GeneratedImage(
            data=codec.encode(pixels, job.output_format, lossy=lossy),
            seed=seed,
            width=job.width,
            height=job.height,
            format=job.output_format,
            media_type=spec.media_type,
            nsfw=flagged,
        )
        for pixels, seed, flagged in zip(output.pixels, job.seeds, nsfw, strict=True)
    ]
    done = time.monotonic()
    return GenerateResult(
        images=images,
        seed=job.seeds[0],
        model=model,
        batch_size=output.batch_images,
        timings=Timings(
            queue_ms=output.queue_s * 1000,
            inference_ms=output.inference_s * 1000,
            encode_ms=(done - encode_started) * 1000,
            total_ms=(done - started) * 1000,
        ),
    )


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def encoding_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that encode results for awaiting callers, sized like asyncio's default pool
    (JPEG and WebP encode with the GIL released, ``codec``'s scratch files, so they spread over
    the cores; fpng's PNG holds it, under a millisecond at 512x512). Its own
    pool, not the loop's: a slow validation or a protocol's own work never queues ahead of an
    answer, and a batch's encodings can start from the engine worker's thread."""
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
            _pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="encode")
        return _pool


def encode_when_done(
    output: concurrent.futures.Future[Output], encode: Callable[[Output], GenerateResult]
) -> concurrent.futures.Future[GenerateResult]:
    """A future of ``encode(output)``, whose encoding starts the moment ``output`` is set.

    The engine worker sets a batch's outputs one after another; each one's encoding is handed
    to the pool from that thread at once, so all of a batch's images encode in parallel while
    the event loop is still waking the callers, and each caller wakes once, to an encoded
    result. With eight callers sharing one call, that turnaround is the accelerator's idle time
    (BENCHMARKS.md, batching). The output's error, or its cancellation, passes through.
    """
    encoded: concurrent.futures.Future[GenerateResult] = concurrent.futures.Future()

    def run(done: concurrent.futures.Future[Output]) -> None:
        if not encoded.set_running_or_notify_cancel():
            return  # the caller has gone: nothing to encode for
        try:
            encoded.set_result(encode(done.result()))
        except BaseException as exc:
            encoded.set_exception(exc)

    def start(done: concurrent.futures.Future[Output]) -> None:
        if done.cancelled():
            encoded.cancel()
        elif (error := done.exception()) is not None:
            if encoded.set_running_or_notify_cancel():
                encoded.set_exception(error)
        else:
            encoding_pool().submit(run, done)

    output.add_done_callback(start)
    return encoded
