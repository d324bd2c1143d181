"""What an image upload costs the server before the model sees it: decode, resize, digest.

    python -m tools.image_cost                  # a 1024x1024 photo-like upload, PNG and JPEG
    python -m tools.image_cost --size 2048 --repeat 10

Runs the server's own code (``inference.images``, and ``Validator.job`` for the whole path) on
one thread, on a synthetic photo (smooth gradients, texture and sensor-like noise: it compresses
like a photo, unlike flat colour or pure noise), and prints the median of ``--repeat`` runs in
milliseconds as a Markdown table. The README quotes its output.

The times are the thread's CPU time (``time.thread_time``): what the server pays per upload, and
on an idle core also the wall time. Wall time on a shared machine measures the neighbours too.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def synthetic_photo(size: int, seed: int = 0) -> np.ndarray:
    """A size x size RGB image with a photo's statistics, the same on every run."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.5 + 0.4 * np.sin(3 * x + c) * np.cos(2 * y - c) for c in (0.0, 1.0, 2.0)])
    texture = 0.1 * np.sin(40 * x * (1 + y)) * np.cos(30 * y)
    image = (base + texture) * 255 + rng.normal(0, 6, (3, size, size))
    return np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    """The median CPU time of ``fn`` on this thread, in milliseconds."""
    fn()  # warm: imports, Pillow's plugin registry, allocator
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        fn()
        times.append((time.thread_time() - started) * 1000)
    return statistics.median(times)


def measure(size: int, repeat: int) -> list[dict[str, Any]]:
    import torch
    from PIL import Image

    from inference.images import DecodeLimits, decode, fit
    from inference.models.mock import MockModel
    from inference.service import Service
    from inference.settings import Settings

    torch.set_num_threads(1)
    photo = synthetic_photo(size)
    validator = Service(MockModel(), Settings()).validator
    half = size // 2
    limits = DecodeLimits(size * size, DecodeLimits.default_bytes(size * size))
    rows = []
    for fmt, options in (("PNG", {}), ("JPEG", {"quality": 90})):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format=fmt, **options)
        data = buffer.getvalue()
        text = base64.b64encode(data).decode("ascii")
        pixels = decode(data, "image", limits)
        rows.append(
            {
                "upload": f"{size}x{size} {fmt}",
                "bytes": len(data),
                "base64 decode": median_ms(lambda t=text: base64.b64decode(t), repeat),
                "decode": median_ms(lambda d=data: decode(d, "image", limits), repeat),
                f"resize to {half}": median_ms(lambda p=pixels: fit(p, half, half), repeat),
                "whole validation, own size": median_ms(
                    lambda d=data: validator.job({"image": d, "seed": 0}), repeat
                ),
                f"whole validation, to {half}": median_ms(
                    lambda d=data: validator.job(
                        {"image": d, "width": half, "height": half, "seed": 0}
                    ),
                    repeat,
                ),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [f"{v:.1f} ms" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the square upload")
    parser.add_argument("--repeat", type=int, default=20, help="runs per measurement")
    args = parser.parse_args(argv)
    sys.stdout.write(table(measure(args.size, args.repeat)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
