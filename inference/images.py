"""Image encoding and decoding: PNG, JPEG, WebP, base64 and data URIs.

PNG is lossless and written without metadata or timestamps, so the same pixels always give the
same bytes (with the pinned Pillow): that is what makes "same request, same PNG" testable.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_BY_MEDIA_TYPE = {v: k for k, v in MEDIA_TYPES.items()} | {"image/jpg": "jpeg"}
LOSSY_QUALITY = 90


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """Encode an HxWx3 uint8 array."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {pixels.dtype} {pixels.shape}")
    image = Image.fromarray(pixels, mode="RGB")
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=LOSSY_QUALITY)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=LOSSY_QUALITY)
    else:
        raise ValueError(f"unknown image format {fmt!r}; use one of {sorted(MEDIA_TYPES)}")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes of any supported format to an HxWx3 uint8 array."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def to_data_uri(data: bytes, fmt: str) -> str:
    return f"data:{MEDIA_TYPES[fmt]};base64,{base64.b64encode(data).decode('ascii')}"


def from_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise ValueError(f"not a base64 data URI: {uri[:40]!r}")
    return base64.b64decode(payload, validate=True)
