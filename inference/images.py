"""Image inputs: untrusted bytes in, pixels of the job's size out. The one place they are read.

Why it works the way it does:

- Only raster formats Pillow reads by itself: PNG, JPEG (and MPO, the multi-picture JPEG that
  phones write: its first picture), WebP, GIF, BMP and TIFF. Pillow would also hand EPS to
  Ghostscript and guess at a dozen rarer formats; those, SVG, text and random bytes are
  refused with what the bytes look like.
- The pixel count comes from the header and is checked against MAX_IMAGE_PIXELS before a
  pixel is decoded: a few kilobytes of PNG can declare billions of pixels.
- Animated images (GIF, APNG, WebP) and multi-page TIFFs are refused rather than cut to their
  first frame: which frame the sender meant would be a guess.
- What Pillow reads is converted, never refused: EXIF orientation applied; CMYK, palette,
  greyscale and bilevel to RGB; 16-bit greyscale scaled to 8 bits (Pillow's own conversion
  clips it to white); transparency composited over white for an image and over black for a
  mask, so strokes painted on a transparent layer are the repainted area. Embedded ICC
  profiles are not applied: pixels are taken as sRGB.
- A mask is greyscale and binarized after resizing: 128 and above repaints, below keeps.
- Size: an image already width x height is used pixel for pixel; another size is scaled to
  cover it and centre-cropped (Lanczos; aspect ratio kept, nothing stretched). A request with
  an image and neither width nor height takes the image's own size, scaled down to fit the
  deployment's limits and rounded down to the model's size multiple.

Every step is integer or Pillow fixed-point arithmetic, so the same bytes give the same pixels
on every machine with the pinned Pillow: a job's digest, and its output, depend on the bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from inference.errors import InferenceError, InvalidRequest, PayloadTooLarge
from inference.schema import SIDE_MIN, Limits

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from inference.settings import Settings

#: What ``Image.open`` may try; anything else is refused. (Pillow's JPEG opener also returns
#: MPO files, as ``MpoImageFile``.)
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
READABLE = "PNG, JPEG, WebP, GIF, BMP or TIFF"
#: Integer greyscale modes with more than 8 bits (16-bit PNG and TIFF).
WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: Modes with an alpha channel (a palette image may also have a transparent colour).
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Magic numbers of formats people send by mistake, for the error message.
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
)


def load(value: bytes | str, field: str, settings: Settings, *, mask: bool = False) -> np.ndarray:
    """The pixels of an image field (its bytes, or an allowed URL fetched here), checked
    against this server's limits: HxWx3 uint8, or HxW uint8 greyscale for a mask."""
    if isinstance(value, str):
        from inference.fetch import fetch_image

        value = fetch_image(value, field, settings)
    check_bytes(value, field, settings)
    return decode(value, field, settings.max_image_pixels, mask=mask)


def check_bytes(data: bytes, field: str, settings: Settings) -> None:
    """Refuse a file over MAX_IMAGE_BYTES before any of it is parsed."""
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            field,
            f"{field} is {len(data)} bytes, more than this server takes (MAX_IMAGE_BYTES="
            f"{settings.max_image_bytes}); send a smaller file (JPEG or WebP, or downscale it)",
        )


def decode(data: bytes, field: str, max_pixels: int, *, mask: bool = False) -> np.ndarray:
    """Decode untrusted image bytes; every refusal is an ``InvalidRequest`` naming ``field``."""
    from PIL import ImageOps

    with _opened(data, field, max_pixels) as image:
        return _pixels(ImageOps.exif_transpose(image), mask)


def transparent_area(data: bytes, field: str, settings: Settings) -> np.ndarray | None:
    """255 where the image is fully transparent, 0 elsewhere (HxW uint8, EXIF orientation
    applied); None when it has no alpha channel. OpenAI's images API marks the area to edit
    this way, in the mask or, without one, in the image itself. Bounded as ``load`` is."""
    from PIL import ImageOps

    check_bytes(data, field, settings)
    with _opened(data, field, settings.max_image_pixels) as image:
        if not _has_alpha(image):  # known from the header: an opaque image is not decoded
            return None
        alpha = np.asarray(ImageOps.exif_transpose(image).convert("RGBA"))[..., 3]
        return np.where(alpha == 0, 255, 0).astype(np.uint8)


@contextmanager
def _opened(data: bytes, field: str, max_pixels: int) -> Iterator[PILImage.Image]:
    """The image in ``data``, its format, pixel count and frame count checked from the header;
    the caller decodes it (lazily, through Pillow) in the ``with`` block, and what fails there
    (truncated data, a damaged EXIF block) is refused as damage, not raised as a bug."""
    from PIL import Image

    Image.init()  # registers every plugin once: ``formats`` may name one not loaded yet
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit, seen in the header
        raise PayloadTooLarge(
            field, f"{field} declares too many pixels ({exc}); downscale it"
        ) from None
    except Exception:  # Pillow raises many types for bytes it cannot identify
        raise InvalidRequest(
            field, f"{field} is not an image this server reads: {looks_like(data)}; send {READABLE}"
        ) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(
                field,
                f"{field} is {width}x{height} = {width * height} pixels, more than this server "
                f"decodes (MAX_IMAGE_PIXELS={max_pixels}); downscale it",
            )
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and image.format != "MPO":
            kind = "a multi-page TIFF" if image.format == "TIFF" else f"an animated {image.format}"
            raise InvalidRequest(
                field, f"{field} is {kind} of {frames} frames; send a single frame as PNG or JPEG"
            )
        try:
            yield image
        except InferenceError:
            raise
        except Exception as exc:  # damage surfaces only while decoding, in pixels or EXIF
            raise InvalidRequest(
                field,
                f"{field} is a {image.format} that cannot be decoded ({exc}): it is truncated "
                f"or damaged; send the whole file again, or re-save it",
            ) from None


def _has_alpha(image: PILImage.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def _pixels(image: PILImage.Image, mask: bool) -> np.ndarray:
    """RGB (or, for a mask, greyscale) uint8 pixels of any mode Pillow opened."""
    from PIL import Image

    if image.mode in WIDE_GREY:
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if _has_alpha(image):
        ground = (0, 0, 0, 255) if mask else (255, 255, 255, 255)
        image = Image.alpha_composite(Image.new("RGBA", image.size, ground), image.convert("RGBA"))
    if mask:
        grey = image if image.mode == "L" else image.convert("RGB").convert("L")
        return np.array(grey, dtype=np.uint8)
    return np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def looks_like(data: bytes) -> str:
    """What bytes that are no readable image seem to be, in a few words."""
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in head
    ):
        return "an SVG (a vector drawing; export it as PNG)"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "a HEIC/AVIF photo (convert it to JPEG)"
    for magic, name in SIGNATURES:
        if data.startswith(magic):
            if name in ("PDF", "PostScript"):
                return f"a {name} document"
            return f"a {name} file that is truncated or damaged ({len(data)} bytes)"
    try:
        text = data[:40].decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or not all(c.isprintable() or c.isspace() for c in text):
        return f"{len(data)} bytes starting {data[:8].hex(' ')}"
    return f"text ({text[:30]!r}...)" if len(text) > 30 else f"text ({text!r})"


def natural_size(width: int, height: int, limits: Limits, multiple: int) -> tuple[int, int]:
    """The output size for an image sent without width and height: its own, scaled down
    (aspect ratio kept) to fit MAX_WIDTH, MAX_HEIGHT and MAX_PIXELS, rounded down to
    ``multiple``, and at least SIDE_MIN."""
    scale = min(
        1.0,
        limits.max_width / width,
        limits.max_height / height,
        math.sqrt(limits.max_pixels / (width * height)),
    )
    smallest = -(-SIDE_MIN // multiple) * multiple

    def side(value: int) -> int:
        # The epsilon keeps 3024 * (1024 / 4032), 767.99999..., from losing a whole multiple.
        return max(smallest, int(value * scale + 1e-6) // multiple * multiple)

    return side(width), side(height)


def fit(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``pixels`` covering width x height, centre-cropped; returned as they are at that size."""
    if pixels.shape[:2] == (height, width):
        return pixels
    from PIL import Image, ImageOps

    fitted = ImageOps.fit(Image.fromarray(pixels), (width, height), Image.Resampling.LANCZOS)
    return np.array(fitted, dtype=np.uint8)


def binarize(mask: np.ndarray) -> np.ndarray:
    """255 where the mask repaints (128 and above), 0 where it keeps."""
    return np.where(mask >= 128, 255, 0).astype(np.uint8)
