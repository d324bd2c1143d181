"""``python -m tools.bench.encoders``: PNG encoder candidates side by side, in one process.

For each candidate: median ms per image (runs interleaved round-robin, so a burst of load from
other processes hits every candidate alike and the ratios hold on a busy machine), bytes, whether
the bytes decode to exactly the input pixels and repeat exactly, and how much faster two threads
encode than one (``two_thread_speedup``: does it release the GIL, so that a thread pool spreads
it over cores?). JPEG and WebP at the server's quality, into a BytesIO and through the server's
``codec.encode``, are listed for that last column. Missing packages are listed as such.

``--lossy`` measures the server's own JPEG and WebP settings instead (``codec.LossyEncoding``:
JPEG_QUALITY, WEBP_QUALITY, WEBP_METHOD): for each choice, median ms per image, size, and
PSNR against the lossless pixels, so a deployer can read off what each knob costs and buys.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np

from tools.bench.images import photo_like

Encoder = Callable[[np.ndarray], bytes]


def _pil(level: int) -> Encoder:
    from PIL import Image

    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()

    return encode


def _pil_lossy(fmt: str) -> Encoder:
    from PIL import Image

    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="RGB").save(buffer, format=fmt, quality=90)
        return buffer.getvalue()

    return encode


def _imagecodecs(level: int) -> Encoder:
    import imagecodecs

    return lambda pixels: bytes(imagecodecs.png_encode(pixels, level=level))


def _cv2(level: int) -> Encoder:
    import cv2

    def encode(pixels: np.ndarray) -> bytes:
        _, data = cv2.imencode(".png", pixels[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, level])
        return data.tobytes()

    return encode


def _fpng() -> Encoder:
    import fpng

    return lambda pixels: bytes(fpng.fpng_ext.encode_ndarray(pixels))


def _zlib_ng(level: int) -> Encoder:
    """A minimal PNG writer: the 'up' filter in numpy, then zlib-ng's deflate."""
    from zlib_ng import zlib_ng

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    def encode(pixels: np.ndarray) -> bytes:
        height, width, _ = pixels.shape
        rows = pixels.reshape(height, width * 3)
        up = np.empty((height, width * 3 + 1), np.uint8)
        up[:, 0] = 2
        up[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=up[1:, 1:])
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = zlib_ng.compress(up.tobytes(), level)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", idat)
            + chunk(b"IEND", b"")
        )

    return encode


CANDIDATES: dict[str, Callable[[], Encoder]] = {
    "pil-6 (Pillow default)": lambda: _pil(6),
    "pil-1": lambda: _pil(1),
    "pil-0 (stored)": lambda: _pil(0),
    "imagecodecs-png-1": lambda: _imagecodecs(1),
    "cv2-1": lambda: _cv2(1),
    "zlib-ng-1 (up filter)": lambda: _zlib_ng(1),
    "fpng": _fpng,
}
#: Not PNG: the lossy formats at the quality the server uses, for the two-thread column:
#: Pillow into a BytesIO, and the server's own path (``codec.encode``: into a file descriptor).
OTHERS: dict[str, Callable[[], Encoder]] = {
    "pil-jpeg-q90 (BytesIO)": lambda: _pil_lossy("JPEG"),
    "codec jpeg (server)": lambda: _codec("jpeg"),
    "pil-webp-q90 (BytesIO)": lambda: _pil_lossy("WEBP"),
    "codec webp (server)": lambda: _codec("webp"),
}


def _codec(fmt: str) -> Encoder:
    from inference import codec

    return lambda pixels: codec.encode(pixels, fmt)


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def two_thread_speedup(encode: Encoder, pixels: np.ndarray, images: int = 4) -> float:
    """How much faster two threads encode ``images`` images than one (best of 3 each).

    Near 2: the encoder releases the GIL for the whole call, so a thread pool spreads it over
    the cores (and the event loop runs meanwhile); near 1: it holds the GIL. A long encode
    that releases the GIL between chunks (Pillow's JPEG into a BytesIO, 64 KB of output at a
    time) would pass a test of "another thread can run at all" and still serialise 512x512
    images, which are one chunk each: this measures the server's case. Needs two free cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    def best(workers: int) -> float:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda _: encode(pixels), range(images)))
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                list(pool.map(lambda _: encode(pixels), range(images)))
                runs.append(time.perf_counter() - started)
        return min(runs)

    return best(1) / best(2)


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over every channel (inf for identical pixels)."""
    mse = float(np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def lossy_choices() -> dict[str, tuple[str, int | None, object]]:
    """name -> (format, per-call quality, LossyEncoding): the settings a deployer can pick."""
    from inference.codec import LossyEncoding

    choices: dict[str, tuple[str, int | None, object]] = {}
    for quality in (95, 90, 75, 50):
        default = " (default)" if quality == 90 else ""
        choices[f"jpeg q{quality}{default}"] = ("jpeg", quality, LossyEncoding())
    for quality in (90, 75):
        for method in (6, 4, 2, 1, 0):
            default = " (default)" if (quality, method) == (90, 4) else ""
            name = f"webp q{quality} method {method}{default}"
            choices[name] = ("webp", quality, LossyEncoding(webp_method=method))
    return choices


def lossy_table(pixels: np.ndarray, rounds: int) -> None:
    """The server's JPEG/WebP settings: ms per image, size and PSNR, interleaved rounds."""
    from inference import codec

    choices = lossy_choices()
    times: dict[str, list[float]] = {name: [] for name in choices}
    for _ in range(rounds):
        for name, (fmt, quality, settings) in choices.items():
            started = time.perf_counter()
            codec.encode(pixels, fmt, quality, settings)  # type: ignore[arg-type]
            times[name].append(time.perf_counter() - started)
    side = pixels.shape[0]
    sys.stdout.write(
        f"{side}x{side} photo-like RGB, {rounds} interleaved rounds, PSNR against the pixels\n"
        "| setting | median ms | KB | PSNR dB |\n|---|---:|---:|---:|\n"
    )
    for name, (fmt, quality, settings) in choices.items():
        data = codec.encode(pixels, fmt, quality, settings)  # type: ignore[arg-type]
        sys.stdout.write(
            f"| {name} | {statistics.median(times[name]) * 1000:.2f} | {len(data) / 1024:.0f} | "
            f"{psnr(pixels, codec.decode(data)):.2f} |\n"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=30, help="encodes per candidate")
    parser.add_argument("--lossy", action="store_true", help="JPEG/WebP settings instead")
    args = parser.parse_args(argv)
    pixels = np.ascontiguousarray(photo_like(args.size))
    if args.lossy:
        lossy_table(pixels, args.rounds)
        return 0
    encoders: dict[str, Encoder] = {}
    for name, make in (CANDIDATES | OTHERS).items():
        try:
            encoders[name] = make()
        except ImportError as exc:
            sys.stdout.write(f"{name}: not installed ({exc})\n")
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        for name, encode in encoders.items():
            started = time.perf_counter()
            encode(pixels)
            times[name].append(time.perf_counter() - started)
    sys.stdout.write(
        f"{args.size}x{args.size} photo-like RGB, {args.rounds} interleaved rounds\n"
        "| encoder | median ms | vs pil-6 | KB | lossless | same bytes twice | 2 threads |\n"
        "|---|---:|---:|---:|---|---|---:|\n"
    )
    base = statistics.median(times["pil-6 (Pillow default)"])
    lossy = set(OTHERS)
    for name, encode in encoders.items():
        data = encode(pixels)
        median = statistics.median(times[name])
        lossless = name not in lossy and np.array_equal(_decode(data), pixels)
        # a slow encoder's column would take minutes, and it is slow either way
        speedup = f"{two_thread_speedup(encode, pixels):.2f}x" if median < 0.05 else "-"
        sys.stdout.write(
            f"| {name} | {median * 1000:.2f} | {base / median:.1f}x | {len(data) / 1024:.0f} | "
            f"{lossless} | {data == encode(pixels)} | {speedup} |\n"
        )
    json_bodies(encoders["fpng"](pixels), args.rounds)
    return 0


def json_bodies(png: bytes, rounds: int) -> None:
    """/predict's JSON body for one image: FastAPI's path against ``result_json``'s."""
    from starlette.responses import JSONResponse

    from inference.http.protocols.native.routes import result_json
    from inference.results import GeneratedImage, GenerateResult, Timings

    image = GeneratedImage(data=png, seed=1, width=1, height=1, format="png", media_type="x")
    timings = Timings(queue_ms=1, inference_ms=1, encode_ms=1, total_ms=1)
    result = GenerateResult(images=[image], seed=1, model="m", batch_size=1, timings=timings)
    writers: dict[str, Callable[[], bytes]] = {
        "FastAPI default (model_dump + json.dumps)": lambda: bytes(
            JSONResponse(result.model_dump(mode="json")).body
        ),
        "pydantic model_dump_json": lambda: result.model_dump_json().encode(),
        "result_json (pybase64 + orjson)": lambda: result_json(result),
    }
    times: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(rounds):
        for name, write in writers.items():
            started = time.perf_counter()
            write()
            times[name].append(time.perf_counter() - started)
    sys.stdout.write(f"\n/predict JSON body, one {len(png) / 1024:.0f} KB PNG\n")
    sys.stdout.write("| writer | median ms |\n|---|---:|\n")
    for name in writers:
        sys.stdout.write(f"| {name} | {statistics.median(times[name]) * 1000:.3f} |\n")


if __name__ == "__main__":
    sys.exit(main())
