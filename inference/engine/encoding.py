"""Result encoding: a job's pixels into the ``GenerateResult`` every front door returns.

It runs on the caller's side of the queue (a thread of the caller's, never the engine worker),
so encoding one batch's images overlaps the model call of the next.
"""

from __future__ import annotations

import time
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
