"""Image inputs read from untrusted bytes: what is converted, what is refused, and how sizes fit."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.errors import InvalidRequest, PayloadTooLarge
from inference.images import (
    DecodeLimits,
    binarize,
    decode,
    fit,
    natural_size,
)
from inference.schema import GenerateRequest, Limits
from inference.validation import parse

MAX_PIXELS = 25_000_000
LIMITS = DecodeLimits(MAX_PIXELS, DecodeLimits.default_bytes(MAX_PIXELS))


def encoded(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and that holds no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def refused(data: bytes, **kw: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        decode(data, "image", LIMITS, **kw)
    assert info.value.field == "image"
    return info.value


# -- what is read, and how it is converted ---------------------------------------------------


def test_rgb_png_is_read_pixel_for_pixel() -> None:
    pixels = noise()
    out = decode(encoded(Image.fromarray(pixels)), "image", LIMITS)
    assert out.dtype == np.uint8 and out.flags.writeable
    assert np.array_equal(out, pixels)


def test_lossless_formats_agree_and_jpeg_is_close() -> None:
    pixels = noise()
    for fmt in ("BMP", "TIFF", "WEBP"):
        options = {"lossless": True} if fmt == "WEBP" else {}
        assert np.array_equal(
            decode(encoded(Image.fromarray(pixels), fmt, **options), "i", LIMITS), pixels
        ), fmt
    flat = np.full((32, 32, 3), (200, 40, 90), dtype=np.uint8)
    jpeg = decode(encoded(Image.fromarray(flat), "JPEG", quality=95), "image", LIMITS)
    assert np.abs(jpeg.astype(int) - flat).max() <= 3


def test_exif_orientation_is_applied() -> None:
    """A phone photo stored sideways with orientation 6 (rotate 90 degrees clockwise)."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode(encoded(Image.fromarray(stored), "JPEG", quality=95, exif=exif), "image", LIMITS)
    assert out.shape == (40, 20, 3)  # upright: taller than wide
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # the left half is now on top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_cmyk_is_converted_to_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    for fmt in ("JPEG", "TIFF"):
        out = decode(encoded(cmyk, fmt), "image", LIMITS)
        assert np.abs(out[8, 8].astype(int) - (255, 0, 0)).max() <= 3, fmt


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    """Pillow's own conversion clips 16-bit values to 255; they must scale to 8 bits."""
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257  # 0, 257, ... 65535
    wide = Image.fromarray(levels)
    assert wide.mode == "I;16"
    for fmt in ("PNG", "TIFF"):
        out = decode(encoded(wide, fmt), "image", LIMITS)
        expected = np.arange(256, dtype=np.uint8).reshape(16, 16)
        assert np.array_equal(out, np.stack([expected] * 3, axis=-1)), fmt


def test_greyscale_palette_and_bilevel_become_rgb() -> None:
    grey = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    out = decode(encoded(Image.fromarray(grey)), "image", LIMITS)
    assert np.array_equal(out, np.stack([grey] * 3, axis=-1))
    palette = Image.fromarray(noise()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert np.array_equal(
        decode(encoded(palette), "image", LIMITS), np.asarray(palette.convert("RGB"))
    )
    bilevel = Image.fromarray(grey).convert("1")
    assert set(np.unique(decode(encoded(bilevel), "image", LIMITS))) <= {0, 255}


def test_transparency_is_white_for_an_image_and_keep_for_a_mask() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 0)  # transparent (its colour must not show)
    rgba[:, 4:] = (255, 255, 255, 255)  # opaque white: painted
    data = encoded(Image.fromarray(rgba))
    image = decode(data, "image", LIMITS)
    assert (image[:, :4] == 255).all() and (image[:, 4:] == 255).all()
    mask = decode(data, "mask", LIMITS, mask=True)
    assert mask.shape == (8, 8)
    assert (mask[:, :4] == 0).all() and (mask[:, 4:] == 255).all()
    greyscale_alpha = Image.fromarray(rgba).convert("LA")
    assert (decode(encoded(greyscale_alpha), "mask", LIMITS, mask=True)[:, :4] == 0).all()
    indexed = Image.fromarray(rgba[..., :3]).convert("P")
    indexed.info["transparency"] = indexed.getpixel((0, 0))
    assert (decode(encoded(indexed), "mask", LIMITS, mask=True)[:, :4] == 0).all()


def test_a_colour_mask_is_read_as_its_luminance() -> None:
    colours = np.zeros((4, 4, 3), dtype=np.uint8)
    colours[0] = (255, 255, 255)
    colours[1] = (0, 255, 0)  # luma 150: repaints once binarized
    colours[2] = (0, 0, 255)  # luma 29: keeps
    mask = decode(encoded(Image.fromarray(colours)), "mask", LIMITS, mask=True)
    assert list(binarize(mask)[:, 0]) == [255, 255, 0, 0]


# -- what is refused, and how it is named -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>', "an SVG"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG"),
        (b"a red fox in the snow\n", "text ('a red fox in the snow"),
        (bytes(range(256)) * 4, "1024 bytes starting 00 01 02 03"),
        (b"%PDF-1.7\n...", "a PDF document"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(40), "HEIC"),
    ],
)
def test_bytes_that_are_no_image_are_named(data: bytes, says: str) -> None:
    error = refused(data)
    assert error.message.startswith("image is not an image this server reads: ")
    assert says in error.message and "send PNG, JPEG, WebP, GIF, BMP or TIFF" in error.message


def test_truncated_files_are_refused_as_such() -> None:
    png = encoded(Image.fromarray(noise(64, 64)))
    error = refused(png[: len(png) // 2])
    assert "image is a PNG that cannot be decoded" in error.message
    assert "truncated or damaged" in error.message
    assert "a PNG file that is truncated or damaged" in refused(png[:30]).message
    jpeg = encoded(Image.fromarray(noise(64, 64)), "JPEG")
    assert "truncated" in refused(jpeg[: len(jpeg) // 3]).message


def test_a_damaged_exif_block_is_refused_as_damage_not_a_crash() -> None:
    """EXIF orientation 6 beside a signed rational of -1/0: Pillow fails (struct.error) while
    it rotates the image and rewrites the EXIF; that is the file's damage, a 4xx."""
    entries = struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<HHII", 0x9204, 10, 1, 38)
    tiff = b"II*\x00" + struct.pack("<IH", 8, 2) + entries + struct.pack("<Iii", 0, -1, 0)
    jpeg = encoded(Image.new("RGB", (8, 8), (10, 20, 30)), "JPEG", exif=b"Exif\x00\x00" + tiff)
    for mask in (False, True):
        with pytest.raises(InvalidRequest, match="image is a JPEG that cannot be decoded"):
            decode(jpeg, "image", LIMITS, mask=mask)


def test_animated_images_and_multi_page_tiffs_are_refused() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]
    for fmt, kind in (
        ("GIF", "an animated GIF"),
        ("PNG", "an animated PNG"),
        ("WEBP", "an animated WEBP"),
        ("TIFF", "a multi-page TIFF"),
    ):
        data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
        error = refused(data)
        assert f"image is {kind} of 3 frames; send a single frame" in error.message, fmt
    single = decode(encoded(frames[0], "GIF"), "image", LIMITS)  # one frame: fine
    assert (single == (255, 0, 0)).all()
    # A phone's multi-picture JPEG (MPO: the photo and a preview) is its first picture.
    mpo = encoded(frames[0], "MPO", save_all=True, append_images=frames[1:2], quality=95)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert np.abs(decode(mpo, "image", LIMITS).astype(int) - (255, 0, 0)).max() <= 3


def test_pixel_count_is_checked_from_the_header_before_decoding() -> None:
    """The header alone (no pixel data follows) is refused by size, not as truncated."""
    with pytest.raises(PayloadTooLarge) as info:
        decode(png_header(5000, 5000), "mask", DecodeLimits(1_000_000, 10**9), mask=True)
    assert info.value.field == "mask" and info.value.code == "payload_too_large"
    assert info.value.message == (
        "mask is 5000x5000 = 25000000 pixels, more than this server decodes "
        "(MAX_IMAGE_PIXELS=1000000); downscale it"
    )


def test_a_decompression_bomb_is_refused_before_pillow_allocates_it() -> None:
    bomb = png_header(100_000, 100_000)  # 10^10 pixels declared in 57 bytes
    with pytest.raises(PayloadTooLarge) as info:
        decode(bomb, "image", LIMITS)
    assert "image declares too many pixels" in info.value.message


# -- sizes ------------------------------------------------------------------------------------


def test_fit_keeps_the_right_size_untouched_and_covers_and_crops_otherwise() -> None:
    pixels = noise(64, 96)
    assert fit(pixels, 96, 64) is pixels
    bands = np.zeros((100, 200, 3), dtype=np.uint8)
    bands[:, :50] = (0, 255, 0)
    bands[:, 50:150] = (255, 0, 0)  # the centre square
    bands[:, 150:] = (0, 0, 255)
    out = fit(bands, 64, 64)
    assert out.shape == (64, 64, 3)
    assert (out[:, 4:60] == (255, 0, 0)).all()  # aspect kept: the centre, not a squashed whole
    tall = fit(bands, 64, 128)
    assert tall.shape == (128, 64, 3) and (tall[:, 28:36] == (255, 0, 0)).all()
    mask = fit(np.full((100, 200), 255, dtype=np.uint8), 64, 64)
    assert mask.shape == (64, 64) and (binarize(mask) == 255).all()


@pytest.mark.parametrize(
    ("size", "multiple", "expected"),
    [
        ((512, 384), 8, (512, 384)),  # fits: its own size
        ((1000, 750), 8, (1000, 744)),  # rounded down to the multiple
        ((4032, 3024), 8, (1024, 768)),  # a 12 MP photo, scaled to MAX_WIDTH
        ((3000, 4000), 16, (768, 1024)),
        ((2048, 2048), 8, (1024, 1024)),
        ((32, 20), 8, (64, 64)),  # never below the schema's 64
    ],
)
def test_natural_size(size: tuple[int, int], multiple: int, expected: tuple[int, int]) -> None:
    assert natural_size(*size, Limits(), multiple) == expected
    small = Limits(max_width=2048, max_height=2048, max_pixels=512 * 512)
    width, height = natural_size(4032, 3024, small, 8)
    assert width * height <= 512 * 512 and abs(width / height - 4 / 3) < 0.02


# -- the schema's side: how a field's value becomes bytes ------------------------------------


def test_image_fields_take_base64_data_uris_bytes_and_urls() -> None:
    png = encoded(Image.fromarray(noise(8, 8)))
    b64 = base64.b64encode(png).decode()
    wrapped = "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60))  # base64 -w 60
    for value in (
        png,
        b64,
        wrapped,
        f"data:image/png;base64,{b64}",
        f"DATA:image/png;BASE64,{b64}",
    ):
        assert parse({"image": value}).image == png
    assert parse({"image": "https://example.com/a.png"}).image == "https://example.com/a.png"
    request = GenerateRequest(image=png, mask=png, prompt_strength=0.5)
    assert request.strength == 0.5
    assert request.model_dump(mode="json")["image"] == b64  # round-trips through JSON
    assert GenerateRequest.model_validate_json(request.model_dump_json()).image == png


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "image is not base64 image data (got 'not base64!'); send base64"),
        ("data:image/png,rawtext", "image: a data: URI must be base64-encoded"),
        ("", "image is empty (0 bytes); send an image file or omit image"),
        (b"", "image is empty (0 bytes)"),
        (42, "image must be an image file, got int"),
    ],
)
def test_bad_image_values_are_named_with_the_fix(value: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse({"image": value})
    assert info.value.field == "image"
    assert message in info.value.message
    if isinstance(value, str) and value:
        assert "multipart/form-data (curl -F image=@photo.png)" in info.value.message


@pytest.mark.parametrize("name", ["strength", "prompt_strength"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_strength_outside_0_1_is_refused(name: str, value: float) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse({name: value})
    assert info.value.field == name
    assert str(value) in info.value.message


def test_the_cost_tool_measures_the_servers_own_path() -> None:
    """tools/image_cost.py, whose numbers the README quotes, runs and reports every stage."""
    from tools.image_cost import measure, table

    rows = measure(size=128, repeat=1)
    assert [row["upload"] for row in rows] == ["128x128 PNG", "128x128 JPEG"]
    assert all(isinstance(v, float) and v > 0 for row in rows for v in list(row.values())[2:])
    assert table(rows).splitlines()[0].startswith("| upload | bytes | base64 decode | decode |")
