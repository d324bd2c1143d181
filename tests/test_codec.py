"""The image codec: fpng's PNG is lossless and deterministic, and /predict's fast JSON path
writes exactly the bytes pydantic would.

Changing the PNG writer (Pillow -> fpng) changed every PNG's bytes, never its pixels: the tests
that compare runtimes compare bytes produced by this one function, so they still hold, and the
pinned hash below is the one place that says which bytes a given image becomes.
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np
import pytest

from inference import codec
from inference.http.protocols.native.routes import result_json
from inference.results import GeneratedImage, GenerateResult, Timings
from tools.bench.images import photo_like

#: SHA-256 of fpng 0.1.x's PNG of ``integer_image()``: the same pixels always give these bytes,
#: on every runtime. A new fpng release that writes other bytes fails here first. (Before fpng,
#: Pillow's level-6 PNG wrote other bytes for the same pixels; no test pinned them.)
INTEGER_IMAGE_PNG_SHA256 = "fc074a5254c9248fda87d9fb89cfde9e209fad310e3760dd5bf72ac0897c18e9"


def integer_image() -> np.ndarray:
    """Smooth gradients plus a little texture, from integer arithmetic alone (the same
    everywhere, unlike anything computed in floating point)."""
    y, x, c = np.indices((64, 96, 3))
    return ((x * 3 + y * 2 + c * 40 + (x * y * 7919 + c) % 13) % 256).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (1, 1), (512, 512)])
def test_every_format_round_trips_its_shape(fmt: str, shape: tuple[int, int]) -> None:
    pixels = np.ascontiguousarray(np.resize(photo_like(64, 1), (*shape, 3)))
    decoded = codec.decode(codec.encode(pixels, fmt))
    assert decoded.shape == pixels.shape
    if fmt == "png":
        assert np.array_equal(decoded, pixels)  # lossless, bit for bit


def test_png_is_lossless_on_noise_flat_colour_and_a_strided_view() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    flat = np.full((16, 16, 3), 200, np.uint8)
    strided = photo_like(128, 2)[::2, 1::3]  # not contiguous: the codec copies it
    for pixels in (noise, flat, strided):
        assert np.array_equal(codec.decode(codec.encode(pixels, "png")), pixels)


def test_the_same_pixels_give_the_same_png_bytes() -> None:
    pixels = integer_image()
    first = codec.encode(pixels, "png")
    assert codec.encode(pixels.copy(), "png") == first
    assert first.startswith(b"\x89PNG\r\n\x1a\n")
    assert hashlib.sha256(first).hexdigest() == INTEGER_IMAGE_PNG_SHA256


def test_bad_arrays_are_refused_with_their_shape() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        codec.encode(np.zeros((4, 4, 4), np.uint8), "png")
    with pytest.raises(ValueError, match="unknown image format"):
        codec.encode(np.zeros((4, 4, 3), np.uint8), "gif")


def test_the_fast_json_body_is_byte_for_byte_pydantics() -> None:
    images = [
        GeneratedImage(
            data=codec.encode(photo_like(64, seed), "png"),
            seed=seed,
            width=64,
            height=64,
            format="png",
            media_type="image/png",
        )
        for seed in (0, 1)
    ]
    timings = Timings(queue_ms=0.1, inference_ms=1 / 3, encode_ms=1e-7, total_ms=12345.678)
    result = GenerateResult(images=images, seed=0, model="m", batch_size=2, timings=timings)
    assert result_json(result) == result.model_dump_json().encode()


def _pillow(pixels: np.ndarray, fmt: str, **options: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_lossy_defaults_write_the_bytes_this_server_always_wrote() -> None:
    pixels = photo_like(128, 1)
    assert codec.encode(pixels, "jpeg") == _pillow(pixels, "JPEG", quality=90)
    assert codec.encode(pixels, "webp") == _pillow(pixels, "WEBP", quality=90)


@pytest.mark.parametrize("shape", [(1, 1), (7, 4), (512, 509)])
@pytest.mark.parametrize("quality", [0, 100])
def test_the_scratch_file_writes_pillows_bytes_at_any_size_and_quality(
    shape: tuple[int, int], quality: int
) -> None:
    """Big files after small ones in the same thread's scratch file, and the reverse."""
    pixels = np.ascontiguousarray(photo_like(512, 2)[: shape[0], : shape[1]])
    for fmt, name in (("jpeg", "JPEG"), ("webp", "WEBP")):
        assert codec.encode(pixels, fmt, quality) == _pillow(pixels, name, quality=quality)


def test_webp_effort_and_per_call_quality_change_the_bytes_as_asked() -> None:
    pixels = photo_like(128, 2)
    fast = codec.LossyEncoding(webp_method=0)
    assert codec.encode(pixels, "webp", lossy=fast) == _pillow(pixels, "WEBP", quality=90, method=0)
    assert codec.encode(pixels, "webp", lossy=fast) != codec.encode(pixels, "webp")
    small = codec.encode(pixels, "jpeg", quality=30)
    assert small == _pillow(pixels, "JPEG", quality=30) and len(small) < len(
        codec.encode(pixels, "jpeg")
    )
    assert codec.encode(pixels, "png", quality=10) == codec.encode(pixels, "png")  # lossless
    with pytest.raises(ValueError, match="quality must be 0-100, got 101"):
        codec.encode(pixels, "jpeg", quality=101)


def test_the_engine_encodes_with_the_deployments_settings() -> None:
    from inference.service import Service
    from inference.settings import Settings

    request = {"prompt": "a fox", "seed": 3, "width": 64, "height": 64, "output_format": "webp"}
    service = Service.from_settings(Settings(webp_method=0, webp_quality=50)).start()
    default = Service.from_settings(Settings()).start()
    try:
        tuned, plain = service.generate(request), default.generate(request)
        assert tuned.images[0].data != plain.images[0].data
        assert len(tuned.images[0].data) < len(plain.images[0].data)  # quality 50 < 90
    finally:
        service.stop(), default.stop()


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_pillow_encodes_into_a_file_descriptor_from_every_thread(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow releases the GIL while it encodes a JPEG to a file descriptor, and holds it for
    the whole encode into a BytesIO (BENCHMARKS.md, "The GIL": 8 JPEGs on 2 threads take as
    long as on one that way). So every Pillow encode gets a real descriptor, each thread its
    own, and the bytes are Pillow's all the same (the test above)."""
    from PIL import Image

    targets: list[tuple[str, int]] = []
    save = Image.Image.save

    def recording_save(image: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        targets.append((threading.current_thread().name, fp.fileno()))  # type: ignore[attr-defined]
        save(image, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", recording_save)
    pixels = photo_like(64, 1)
    first = codec.encode(pixels, fmt)
    other = threading.Thread(target=lambda: codec.encode(pixels, fmt), name="other")
    other.start()
    other.join()
    assert codec.encode(pixels, fmt) == first  # a reused scratch file leaves nothing behind
    (_, fd), (theirs, their_fd), (_, fd_again) = targets
    assert theirs == "other" and their_fd != fd and fd_again == fd


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_encodes_into_a_scratch_file_of_its_own() -> None:
    """After a fork the thread's scratch file is shared with the parent (one open file):
    a parent and child encoding at once would write into each other's bytes."""
    pixels = photo_like(64, 1)
    expected = codec.encode(pixels, "jpeg")
    parent_file = os.fstat(codec._scratch_file().fileno()).st_ino
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            same = codec.encode(pixels, "jpeg") == expected
            own = os.fstat(codec._scratch_file().fileno()).st_ino != parent_file
            os.write(writer, b"ok" if same and own else b"shared")
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 16)
    os.waitpid(child, 0)
    os.close(reader)
    assert answer == b"ok"


def test_without_memfd_the_scratch_file_is_a_temporary_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sandbox that refuses memfd_create (or an OS without it) still encodes, the same bytes."""

    def refused(*args: object) -> int:
        raise PermissionError(1, "Operation not permitted")

    pixels = photo_like(64, 1)
    expected = codec.encode(pixels, "jpeg")
    monkeypatch.setattr(os, "memfd_create", refused)
    done: list[bytes] = []
    worker = threading.Thread(target=lambda: done.append(codec.encode(pixels, "jpeg")))
    worker.start()
    worker.join()
    assert done == [expected]
