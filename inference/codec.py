"""Image encoding and decoding, and the one table of the image formats this server writes.

PNG is lossless and written without metadata or timestamps, so the same pixels always give the
same bytes: that is what makes "same request, same PNG" testable. PNG is written by fpng (the
``fpng`` package), not Pillow: about 0.7 ms for a 512x512 photo-like image against Pillow's
40-100 ms at its default level, at +14% size (``python -m tools.bench.encoders`` compares the
candidates; BENCHMARKS.md quotes it). fpng's output depends only on the pixels (its SIMD code
computes checksums, not the deflate stream). Its binding holds the GIL; a process pool was tried
and lost on a small host (BENCHMARKS.md, "The GIL"). JPEG and WebP go through Pillow, and every
Pillow encode writes to a per-thread scratch file: Pillow holds the GIL for a whole JPEG encode
into a ``BytesIO`` but releases it while it encodes to a file descriptor (``encode_to_file``),
with the same bytes, so the threads that encode results (``engine.encoding``) spread JPEGs over
the cores and the event loop runs meanwhile.
Every front door (JSON, ``Accept`` negotiation, CLI file suffixes, batch-job file names, Cog
outputs) reads this table, so a new format is one row here plus its name in
``schema.OutputFormat`` (a test keeps the two equal).
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and PIL load on first use: the schema imports this table
    import numpy as np


@dataclass(frozen=True)
class ImageFormat:
    """One output format: its API name, MIME type, file suffixes and Pillow encoder options."""

    name: str
    media_type: str
    suffixes: tuple[str, ...]  # the first one is what this server writes
    pillow: str  # Pillow's name of the format: decoding, and encoding when no writer is set
    options: tuple[tuple[str, int], ...] = ()

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


LOSSY_QUALITY = 90
#: Pillow's default WebP effort (0 fastest .. 6 slowest, smallest).
WEBP_METHOD = 4
FORMATS: dict[str, ImageFormat] = {
    f.name: f
    for f in (
        ImageFormat("png", "image/png", (".png",), "PNG"),
        ImageFormat("jpeg", "image/jpeg", (".jpg", ".jpeg"), "JPEG", (("quality", LOSSY_QUALITY),)),
        ImageFormat("webp", "image/webp", (".webp",), "WEBP", (("quality", LOSSY_QUALITY),)),
    )
}
#: ``Accept`` values, including the common non-standard alias image/jpg.
BY_MEDIA_TYPE = {f.media_type: f for f in FORMATS.values()} | {"image/jpg": FORMATS["jpeg"]}
BY_SUFFIX = {suffix: f for f in FORMATS.values() for suffix in f.suffixes}


@dataclass(frozen=True)
class LossyEncoding:
    """How JPEG and WebP trade CPU and bytes against fidelity: the deployment's choice
    (JPEG_QUALITY, WEBP_QUALITY, WEBP_METHOD). The defaults write the bytes this server always
    wrote; lower WebP effort costs a fraction of the CPU for slightly larger files (BENCHMARKS.md
    measures each choice), which matters where encoding, not the accelerator, is the limit."""

    jpeg_quality: int = LOSSY_QUALITY
    webp_quality: int = LOSSY_QUALITY
    webp_method: int = WEBP_METHOD

    def pillow_options(self, fmt: str, quality: int | None = None) -> dict[str, int]:
        """Pillow's save options for ``fmt``; ``quality`` (0-100) overrides this call's."""
        if quality is not None and not 0 <= quality <= 100:
            raise ValueError(f"quality must be 0-100, got {quality}")
        options = dict(FORMATS[fmt].options)
        if fmt == "jpeg":
            options["quality"] = self.jpeg_quality if quality is None else quality
        elif fmt == "webp":
            options["quality"] = self.webp_quality if quality is None else quality
            options["method"] = self.webp_method
        return options


DEFAULT_LOSSY = LossyEncoding()


def encode(
    pixels: np.ndarray, fmt: str, quality: int | None = None, lossy: LossyEncoding = DEFAULT_LOSSY
) -> bytes:
    """Encode an HxWx3 uint8 array as ``fmt`` (a key of ``FORMATS``).

    ``quality`` (0-100, JPEG and WebP; PNG is lossless and ignores it) is one call's choice,
    such as OpenAI's ``output_compression``; ``lossy`` holds the deployment's defaults.
    """
    import numpy as np
    from PIL import Image

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {pixels.dtype} {pixels.shape}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; use one of {sorted(FORMATS)}")
    if fmt == "png":
        return _fpng(pixels)
    options = lossy.pillow_options(fmt, quality)
    scratch = _scratch_file()
    os.ftruncate(scratch.fileno(), 0)
    scratch.seek(0)
    Image.fromarray(pixels, mode="RGB").save(scratch, format=FORMATS[fmt].pillow, **options)
    return os.pread(scratch.fileno(), scratch.seek(0, os.SEEK_END), 0)


def transcode(png: bytes, fmt: str, quality: int, lossy: LossyEncoding = DEFAULT_LOSSY) -> bytes:
    """This server's own lossless PNG as ``fmt`` at ``quality``: the same bytes as encoding
    the pixels at that quality in the first place (PNG keeps every pixel)."""
    return encode(decode(png), fmt, quality, lossy)


def _fpng(pixels: np.ndarray) -> bytes:
    import numpy as np
    from fpng import fpng_ext

    data = fpng_ext.encode_ndarray(np.ascontiguousarray(pixels))
    if not data:  # the binding signals failure with empty bytes, never an exception
        raise ValueError(f"fpng could not encode an image of shape {pixels.shape}")
    return data


_scratch = threading.local()


def _scratch_file() -> io.FileIO:
    held: _ScratchFile | None = getattr(_scratch, "held", None)
    if held is None or held.pid != os.getpid():  # a forked child shares its parent's file
        held = _scratch.held = _ScratchFile()
    return held.file


class _ScratchFile:
    """A thread's scratch file for Pillow to encode into, in memory (a memfd) where the OS has
    them and lets us (a sandbox may refuse the call), else a temporary file: unbuffered, so what
    Pillow's C code writes to its descriptor and what Python reads back agree. One per thread
    and process, reused, closed when its thread ends."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        try:
            self.file = io.FileIO(os.memfd_create("inference-encode", os.MFD_CLOEXEC), "w+b")
        except (AttributeError, OSError):
            self.file = tempfile.TemporaryFile("w+b", buffering=0)  # noqa: SIM115 (kept open)

    def __del__(self) -> None:
        self.file.close()


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes of any supported format to an HxWx3 uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
