"""Decode memory bounded from the header, a bounded number of decodes at once, and every
damaged file a 4xx (issue 22, items 3 and 7): per class at the unit level and over /predict,
peak RSS of a real decode against what ``decode_bytes`` charged, and a property test."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from inference.errors import InvalidRequest, Overloaded, PayloadTooLarge
from inference.images import DecodeLimits, _decode_slot, decode
from tests.servers import ROOT
from tests.test_images import encoded

LIMITS = DecodeLimits(25_000_000, DecodeLimits.default_bytes(25_000_000))
FIELDS = {"prompt": "a red fox", "seed": 7, "steps": 2, "width": 64, "height": 64}


def multi_frame(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:])


def frame_count_breaks(data: bytes) -> list[int]:
    """Lengths at which Pillow opens the cut file but raises while counting its frames: the
    reads that happened outside the guarded decode and answered 500."""
    cuts = []
    for n in range(8, len(data), max(1, len(data) // 400)):
        try:
            with Image.open(io.BytesIO(data[:n])) as image:
                image.n_frames  # noqa: B018 - the read under test
        except (OSError, SyntaxError):
            continue  # refused when identified: a 4xx before and after
        except Exception:  # IndexError, TypeError, struct.error, ...
            cuts.append(n)
    return cuts


def decodes_or_is_refused(data: bytes, mask: bool = False) -> None:
    """Pixels, or InvalidRequest (PayloadTooLarge is one) naming the field; nothing else."""
    try:
        decode(data, "image", LIMITS, mask=mask)
    except InvalidRequest as exc:
        assert exc.field == "image"


def tall_grey() -> bytes:
    """48 KB of PNG that decodes to 1 x 25,000,000 pixels: within MAX_IMAGE_PIXELS."""
    return encoded(Image.new("L", (1, 25_000_000)), optimize=True)


def small(mode: str, fmt: str = "PNG", **options: object) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 4), dtype=np.uint8)
    return encoded(Image.fromarray(pixels, "RGBA").convert(mode), fmt, **options)


def palette_with_transparency() -> bytes:
    indexed = Image.new("P", (64, 48), 3)
    indexed.paste(0, (0, 0, 32, 48))
    return encoded(indexed, transparency=0)


def sixteen_bit() -> bytes:
    return encoded(Image.fromarray(np.full((48, 64), 40_000, dtype=np.uint16)))


# -- unit level: each class ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_every_truncation_of_a_multi_frame_file_is_a_4xx(fmt: str) -> None:
    data = multi_frame(fmt)
    assert frame_count_breaks(data), "no cut breaks the frame count: the test proves nothing"
    for n in range(1, len(data), max(1, len(data) // 400)):
        decodes_or_is_refused(data[:n])  # a cut after the first frame is a still image


def test_formats_and_modes_that_are_read() -> None:
    assert (decode(palette_with_transparency(), "image", LIMITS)[:, :32] == 255).all()
    assert (decode(palette_with_transparency(), "mask", LIMITS, mask=True)[:, :32] == 0).all()
    assert (decode(sixteen_bit(), "image", LIMITS) == round(40_000 * 255 / 65535)).all()
    assert decode(small("CMYK", "JPEG"), "image", LIMITS).shape == (48, 64, 3)
    with pytest.raises(InvalidRequest, match="an animated GIF of 3 frames"):
        decode(multi_frame("GIF"), "image", LIMITS)


def test_a_1_by_25_million_image_is_refused_by_its_decode_cost() -> None:
    """25,000,000 pixels pass MAX_IMAGE_PIXELS; 25,000,000 rows are what make it expensive."""
    with pytest.raises(PayloadTooLarge) as info:
        decode(tall_grey(), "image", LIMITS)  # as RGB: 25 million rows of L, then of RGB
    message = info.value.message
    assert "image is a 1x25000000 PNG in mode L, which takes " in message
    assert f"(MAX_DECODE_BYTES={LIMITS.max_bytes}); downscale it" in message
    roomy = DecodeLimits(25_000_000, 2 * 1024**3)  # a deployment that allows it decodes it
    assert decode(tall_grey(), "image", roomy).shape == (25_000_000, 1, 3)


def test_a_decode_past_the_concurrency_bound_waits_then_gives_up() -> None:
    one = DecodeLimits(LIMITS.max_pixels, LIMITS.max_bytes, concurrent=1, wait_s=0.2)
    with _decode_slot("held", one), pytest.raises(Overloaded) as info:
        decode(sixteen_bit(), "image", one)
    assert "(MAX_CONCURRENT_DECODES)" in info.value.message
    patient = DecodeLimits(LIMITS.max_pixels, LIMITS.max_bytes, concurrent=1, wait_s=60)
    release = threading.Event()
    results: list[np.ndarray] = []

    def hold() -> None:
        with _decode_slot("held", patient):
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    waiter = threading.Thread(target=lambda: results.append(decode(small("RGB"), "i", patient)))
    waiter.start()
    waiter.join(0.5)
    assert not results  # waiting, not decoding
    release.set()
    waiter.join(60)
    holder.join(60)
    assert results and results[0].shape == (48, 64, 3)


# -- peak RSS of one decode against the charge -----------------------------------------------

RSS = """
import io, json, sys
from PIL import Image
from inference.errors import PayloadTooLarge
from inference.images import DecodeLimits, decode, decode_bytes
data, mask = open(sys.argv[1], "rb").read(), sys.argv[2] == "1"
limits = DecodeLimits(25_000_000, DecodeLimits.default_bytes(25_000_000))
for warm in ("PNG", "JPEG"):  # plugins and numpy loaded before the baseline
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=warm)
    decode(buffer.getvalue(), "warm-up", limits, mask=mask)
charge = decode_bytes(Image.open(io.BytesIO(data)), "mask" if mask else "image")


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the high-water mark starts again from here
before = status("VmRSS")
try:
    decode(data, "image", limits, mask=mask)
    refused = False
except PayloadTooLarge:
    refused = True
print(json.dumps({"peak": status("VmHWM") - before, "charge": charge, "refused": refused}))
"""


def peak_of_one_decode(
    tmp_path: Path, mode: str, size: tuple[int, int], fmt: str, mask: bool
) -> dict[str, int]:
    """Peak RSS of decoding a blank ``mode`` image saved as ``fmt``, in a fresh process (the
    file is written here, so making it does not raise the child's high-water mark)."""
    image = Image.new(mode, size)
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, format=fmt, **({"transparency": 0} if mode == "P" else {}))
    del image
    out = subprocess.run(
        [sys.executable, "-c", RSS, str(path), str(int(mask))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's VmHWM")
@pytest.mark.parametrize(
    ("mode", "size", "fmt", "mask"),
    [
        ("I;16", (5000, 5000), "PNG", False),
        ("RGBA", (5000, 5000), "PNG", False),
        ("P", (5000, 5000), "PNG", True),
        ("CMYK", (5000, 5000), "JPEG", False),
        ("RGB", (12_500_000, 2), "PNG", True),  # the decoder's rows
    ],
)
def test_peak_rss_of_a_decode_stays_under_its_charge(
    tmp_path: Path, mode: str, size: tuple[int, int], fmt: str, mask: bool
) -> None:
    """The kernel's peak RSS (VmHWM, reset first; ru_maxrss would start at pytest's, which a
    child inherits): C allocations included, which tracemalloc cannot see."""
    result = peak_of_one_decode(tmp_path, mode, size, fmt, mask)
    assert not result["refused"]
    assert result["peak"] <= result["charge"] <= LIMITS.max_bytes, result
    assert result["peak"] > result["charge"] // 2, result  # the charge is not a wild guess


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's VmHWM")
def test_a_refused_tall_image_allocates_nothing_like_its_cost(tmp_path: Path) -> None:
    result = peak_of_one_decode(tmp_path, "L", (1, 25_000_000), "PNG", False)
    assert result["refused"] and result["charge"] > LIMITS.max_bytes
    assert result["peak"] < 64 * 1024**2, result  # was ~890 MB decoded


# -- over HTTP ---------------------------------------------------------------------------------


def test_each_class_over_predict(server_url: str) -> None:
    def post(image: bytes) -> httpx.Response:
        body = {**FIELDS, "image": base64.b64encode(image).decode()}
        return httpx.post(f"{server_url}/predict", json=body, timeout=120)

    for cut_of in (multi_frame("GIF"), multi_frame("TIFF")):
        for n in frame_count_breaks(cut_of)[:5]:
            response = post(cut_of[:n])
            assert response.status_code == 422, (n, response.text)
            assert response.json()["error"]["field"] == "image"
    response = post(tall_grey())
    assert response.status_code == 413, response.text
    assert "MAX_DECODE_BYTES=" in response.json()["error"]["message"]
    assert "an animated GIF" in post(multi_frame("GIF")).json()["error"]["message"]
    for readable in (sixteen_bit(), palette_with_transparency(), small("CMYK", "JPEG")):
        assert post(readable).status_code == 200


# -- any bytes -----------------------------------------------------------------------------------

VALID = [
    multi_frame("GIF"),
    multi_frame("TIFF"),
    sixteen_bit(),
    palette_with_transparency(),
    small("CMYK", "JPEG"),
    small("RGBA", "WEBP"),
    small("RGB", "BMP"),
    encoded(Image.new("RGB", (16, 16)), "JPEG", progressive=True),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=512),
        st.tuples(st.sampled_from(VALID), st.floats(0, 1)).map(
            lambda v: v[0][: int(len(v[0]) * v[1])]
        ),
        st.tuples(
            st.sampled_from(VALID), st.integers(0, 10**6), st.binary(min_size=1, max_size=4)
        ).map(lambda v: v[0][: v[1] % len(v[0])] + v[2] + v[0][v[1] % len(v[0]) + len(v[2]) :]),
    ),
    st.booleans(),
)
def test_any_bytes_decode_or_are_refused_as_a_4xx(data: bytes, mask: bool) -> None:
    decodes_or_is_refused(data, mask)
