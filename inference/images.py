"""Image inputs: untrusted bytes in, pixels of the job's size out. The one place they are read.

Why it works the way it does:

- Only raster formats Pillow reads by itself: PNG, JPEG (and MPO, the multi-picture JPEG that
  phones write: its first picture), WebP, GIF, BMP and TIFF. Pillow would also hand EPS to
  Ghostscript and guess at a dozen rarer formats; those, SVG, text and random bytes are
  refused with what the bytes look like.
- The pixel count comes from the header and is checked against MAX_IMAGE_PIXELS before a
  pixel is decoded: a few kilobytes of PNG can declare billions of pixels. So is the memory
  the decode will take (``decode_bytes``: every buffer of every mode it passes through, and
  a cost per row, so a 1 x 25,000,000 image is not cheap), against MAX_DECODE_BYTES; and at
  most MAX_CONCURRENT_DECODES decode at once, the rest waiting for a slot.
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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inference.errors import InferenceError, InvalidRequest, Overloaded, PayloadTooLarge
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


#: What a decode is for (``decode_bytes`` charges each one its own steps): an image's RGB
#: pixels, a mask's greyscale, or the alpha channel alone (``transparent_area``).
IMAGE, MASK, ALPHA = "image", "mask", "alpha"
#: Bytes a pixel takes in Pillow's own storage, by mode: RGB, LA and every mode not named here
#: take 4 (Pillow pads 2- and 3-band pixels to 4 bytes).
PILLOW_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
#: Bytes Pillow spends on each row of an image besides its pixels (its row pointer): what
#: makes a 1 x 25,000,000 image cost three times a 5000 x 5000 one of the same pixel count.
PILLOW_ROW_BYTES = 8
#: A decoder's own buffers, per pixel of width: a PNG keeps two rows to unfilter (up to 8
#: bytes a pixel, 16-bit RGBA); other decoders a row or a strip.
DECODER_ROW_BYTES = 16
#: What a decode allocates whatever the image's size (codec state, libjpeg's pools, the
#: allocator's slack); ``tests/test_decode_bounds.py`` checks peak RSS against the whole sum.
DECODER_FIXED_BYTES = 16 * 1024**2
#: MAX_DECODE_BYTES when unset, per pixel of MAX_IMAGE_PIXELS: Pillow's 4 bytes a pixel, 5
#: times, the peak of decoding an RGBA image (decoded, then the ground, the image as RGBA and
#: their composite, then the RGB copy) plus room. So every 8-bit image within
#: MAX_IMAGE_PIXELS that is not extremely narrow decodes, and only pathological shapes or
#: modes (1 x 25,000,000; 16-bit with alpha) are refused.
DECODE_BYTES_PER_PIXEL = 4 * 5


@dataclass(frozen=True)
class DecodeLimits:
    """What one decode may cost: pixels (MAX_IMAGE_PIXELS), bytes allocated (MAX_DECODE_BYTES),
    and how many decode at once (MAX_CONCURRENT_DECODES), a decode past that bound waiting at
    most ``wait_s`` (REQUEST_TIMEOUT_S) for a slot instead of allocating."""

    max_pixels: int
    max_bytes: int
    concurrent: int = 2
    wait_s: float = 120.0

    @classmethod
    def of(cls, settings: Settings) -> DecodeLimits:
        return cls(
            settings.max_image_pixels,
            settings.max_decode_bytes or cls.default_bytes(settings.max_image_pixels),
            settings.max_concurrent_decodes,
            settings.request_timeout_s,
        )

    @staticmethod
    def default_bytes(max_pixels: int) -> int:
        """MAX_DECODE_BYTES when unset: MAX_IMAGE_PIXELS x 4 x 5 + 16 MiB."""
        return max_pixels * DECODE_BYTES_PER_PIXEL + DECODER_FIXED_BYTES


def decode_bytes(image: PILImage.Image, purpose: str) -> int:
    """The most memory decoding ``image`` (opened, not loaded) holds at once, from its header:
    the decoded image (kept until the end), plus the largest step — the decoder's own buffer,
    or a step of ``_pixels`` with its input and output — each array or Pillow image counted at
    its real size (Pillow's 4 bytes for RGB, a row overhead per row, the ``tobytes`` copy
    under ``np.array``). Whatever the pixel count, a 1 x N image pays for N rows."""
    (width, height), mode = image.size, image.mode
    pixels = width * height

    def pillow(mode: str) -> int:
        return pixels * PILLOW_PIXEL_BYTES.get(mode, 4) + height * PILLOW_ROW_BYTES

    decoded = pillow(mode)
    steps = [decoded, DECODER_ROW_BYTES * width]  # EXIF's turned copy; the decoder's rows
    if image.format == "WEBP":  # libwebp decodes into its own RGBA buffer first
        steps.append(4 * pixels)
    elif image.format in ("JPEG", "MPO") and "progressive" in image.info:
        steps.append(2 * len(image.getbands()) * pixels)  # libjpeg's DCT coefficients
    current = 0  # the working image, once a step has replaced the decoded one
    if purpose == ALPHA:  # RGBA, its bytes as an array, the comparison, the area
        return DECODER_FIXED_BYTES + decoded + max(*steps, pillow("RGBA") + 6 * pixels)
    if mode in WIDE_GREY:  # the pixels as an array, clipped, as uint16, the table's output, as L
        wide = PILLOW_PIXEL_BYTES.get(mode, 4)
        steps.append(pixels * (2 * wide + 2 + 1) + pillow("L"))
        current, mode = pillow("L"), "L"
    if _has_alpha(image):  # the ground, the image as RGBA, their composite
        steps.append(current + 3 * pillow("RGBA"))
        current, mode = pillow("RGBA"), "RGBA"
    if purpose == MASK:
        if mode not in ("L", "RGB"):
            steps.append(current + pillow("RGB"))
            current = pillow("RGB")
        grey = 0 if mode == "L" else pillow("L")
        steps.append(current + grey + 2 * pixels)  # np.array: tobytes, then its copy
    else:
        rgb = 0 if mode == "RGB" else pillow("RGB")
        steps.append(current + rgb + 2 * 3 * pixels)
    return DECODER_FIXED_BYTES + decoded + max(steps)


_gates: dict[int, threading.BoundedSemaphore] = {}
_gates_lock = threading.Lock()


@contextmanager
def _decode_slot(field: str, limits: DecodeLimits) -> Iterator[None]:
    """One of the process's ``limits.concurrent`` decode slots (shared by every caller with
    that bound), waited for at most ``limits.wait_s``: a burst of uploads queues here instead
    of allocating MAX_DECODE_BYTES each at once."""
    with _gates_lock:
        gate = _gates.setdefault(limits.concurrent, threading.BoundedSemaphore(limits.concurrent))
    if not gate.acquire(timeout=limits.wait_s):
        raise Overloaded(
            f"{field} waited {limits.wait_s:g}s for one of {limits.concurrent} image decodes "
            f"(MAX_CONCURRENT_DECODES) to finish; retry shortly"
        )
    try:
        yield
    finally:
        gate.release()


def load(value: bytes | str, field: str, settings: Settings, *, mask: bool = False) -> np.ndarray:
    """The pixels of an image field (its bytes, or an allowed URL fetched here), checked
    against this server's limits: HxWx3 uint8, or HxW uint8 greyscale for a mask."""
    if isinstance(value, str):
        from inference.fetch import fetch_image

        value = fetch_image(value, field, settings)
    check_bytes(value, field, settings)
    return decode(value, field, DecodeLimits.of(settings), mask=mask)


def check_bytes(data: bytes, field: str, settings: Settings) -> None:
    """Refuse a file over MAX_IMAGE_BYTES before any of it is parsed."""
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            field,
            f"{field} is {len(data)} bytes, more than this server takes (MAX_IMAGE_BYTES="
            f"{settings.max_image_bytes}); send a smaller file (JPEG or WebP, or downscale it)",
        )


def decode(data: bytes, field: str, limits: DecodeLimits, *, mask: bool = False) -> np.ndarray:
    """Decode untrusted image bytes; every refusal is an ``InvalidRequest`` naming ``field``
    (``PayloadTooLarge`` for a limit), whatever Pillow raises on the way."""
    with _opened(data, field, limits, MASK if mask else IMAGE) as image:
        return _pixels(image, mask)


def transparent_area(data: bytes, field: str, settings: Settings) -> np.ndarray | None:
    """255 where the image is fully transparent, 0 elsewhere (HxW uint8, EXIF orientation
    applied); None when it has no alpha channel. OpenAI's images API marks the area to edit
    this way, in the mask or, without one, in the image itself. Bounded as ``load`` is."""
    check_bytes(data, field, settings)
    with _opened(data, field, DecodeLimits.of(settings), ALPHA) as image:
        if image is None:  # known from the header: an opaque image is not decoded
            return None
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        return np.where(alpha == 0, np.uint8(255), np.uint8(0))


@contextmanager
def _opened(
    data: bytes, field: str, limits: DecodeLimits, purpose: str
) -> Iterator[PILImage.Image | None]:
    """The image in ``data``, upright, its format, pixel count, frame count and decode cost
    checked from the header, inside one of MAX_CONCURRENT_DECODES slots; the caller decodes
    it (lazily, through Pillow) in the ``with`` block. None, for ``ALPHA``, when the image has
    no alpha channel (nothing is decoded). Whatever Pillow raises past identifying the format
    (a truncated frame table read for the frame count, truncated pixels, a damaged EXIF
    block) is the file's damage, refused as such, never raised as a bug."""
    from PIL import ImageOps

    image = _identified(data, field)
    with image:
        try:
            _check_header(image, field, limits, purpose)
            if purpose == ALPHA and not _has_alpha(image):
                yield None
                return
            with _decode_slot(field, limits):
                ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
                yield image
        except InferenceError:
            raise
        except Exception as exc:  # Pillow's damage has no common base class
            raise InvalidRequest(
                field,
                f"{field} is a {image.format} that cannot be decoded ({exc}): it is truncated "
                f"or damaged; send the whole file again, or re-save it",
            ) from None


def _identified(data: bytes, field: str) -> PILImage.Image:
    """``data`` opened by the plugin of one of ``FORMATS`` (its header read, nothing decoded)."""
    from PIL import Image

    Image.init()  # registers every plugin once: ``formats`` may name one not loaded yet
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit, seen in the header
        raise PayloadTooLarge(
            field, f"{field} declares too many pixels ({exc}); downscale it"
        ) from None
    except Exception:  # Pillow raises many types for bytes it cannot identify
        raise InvalidRequest(
            field, f"{field} is not an image this server reads: {looks_like(data)}; send {READABLE}"
        ) from None


def _check_header(image: PILImage.Image, field: str, limits: DecodeLimits, purpose: str) -> None:
    """Refuse, from the header alone, what would cost too much to decode or be a guess."""
    width, height = image.size
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            field,
            f"{field} is {width}x{height} = {width * height} pixels, more than this server "
            f"decodes (MAX_IMAGE_PIXELS={limits.max_pixels}); downscale it",
        )
    frames = getattr(image, "n_frames", 1)  # GIF and TIFF walk their frames: may raise
    if frames > 1 and image.format != "MPO":
        kind = "a multi-page TIFF" if image.format == "TIFF" else f"an animated {image.format}"
        raise InvalidRequest(
            field, f"{field} is {kind} of {frames} frames; send a single frame as PNG or JPEG"
        )
    cost = decode_bytes(image, purpose)
    if cost > limits.max_bytes:
        raise PayloadTooLarge(
            field,
            f"{field} is a {width}x{height} {image.format} in mode {image.mode}, which takes "
            f"{cost} bytes to decode, more than this server spends on one image "
            f"(MAX_DECODE_BYTES={limits.max_bytes}); downscale it, or re-save it as 8-bit "
            f"RGB closer to square",
        )


def _has_alpha(image: PILImage.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def _pixels(image: PILImage.Image, mask: bool) -> np.ndarray:
    """RGB (or, for a mask, greyscale) uint8 pixels of any mode Pillow opened. Each step
    drops its input as soon as it can: ``decode_bytes`` charges exactly these steps."""
    from PIL import Image

    if image.mode in WIDE_GREY:
        image = Image.fromarray(_eight_bit(np.asarray(image)), mode="L")
    if _has_alpha(image):
        ground = (0, 0, 0, 255) if mask else (255, 255, 255, 255)
        image = Image.alpha_composite(Image.new("RGBA", image.size, ground), image.convert("RGBA"))
    if mask:
        if image.mode not in ("L", "RGB"):  # CMYK, palette, ... read as RGB first
            image = image.convert("RGB")
        return np.array(image if image.mode == "L" else image.convert("L"), dtype=np.uint8)
    return np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def _eight_bit(wide: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit "I") greyscale scaled to 0..255, rounding to nearest, by a table:
    one byte a pixel, where arithmetic on the pixels would take eight."""
    if wide.dtype != np.uint16:  # mode "I": int32 that may leave 0..65535
        wide = np.clip(wide, 0, 65535).astype(np.uint16)
    return _WIDE_TO_8[wide]


_WIDE_TO_8 = ((np.arange(65536, dtype=np.int64) * 255 + 32767) // 65535).astype(np.uint8)


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
