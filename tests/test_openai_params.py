"""OpenAI's newer image parameters, driven by the official ``openai`` client (3.63).

``output_compression`` is the JPEG/WebP quality (checked by size and by decoding, and against
encoding the same pixels at that quality), png ignores it; what the client can send but this
server cannot make is refused as "not supported by this server", naming the parameter; and an
edit of several images is refused saying why.
"""

from __future__ import annotations

import base64
import inspect
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")

from inference import codec  # noqa: E402
from inference.http.protocols.openai.params import (  # noqa: E402
    UNSUPPORTED,
    EditParams,
    GenerationParams,
)
from tests.test_img2img import photo, png  # noqa: E402
from tests.test_openai import assert_bad_request, server_and_client_fixtures  # noqa: E402

QUICK = {"seed": 5, "steps": 4}

server, client = server_and_client_fixtures()


def generated(client: Any, **arguments: Any) -> bytes:
    result = client.images.generate(
        prompt="a red fox", size="128x128", extra_body=QUICK, **arguments
    )
    assert len(result.data) == 1
    return base64.b64decode(result.data[0].b64_json)


@pytest.mark.parametrize(("fmt", "pillow"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_compression_is_the_lossy_formats_quality(
    client: Any, fmt: str, pillow: str
) -> None:
    exact = codec.decode(generated(client, output_format="png"))
    by_quality = {
        q: generated(client, output_format=fmt, output_compression=q) for q in (5, 50, 100)
    }
    for quality, data in by_quality.items():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == pillow and image.size == (128, 128)
        # Exactly the model's pixels encoded at that quality: nothing lost on the way.
        assert data == codec.encode(exact, fmt, quality)
    assert len(by_quality[5]) < len(by_quality[50]) < len(by_quality[100])
    errors = {q: np.abs(codec.decode(d).astype(int) - exact).mean() for q, d in by_quality.items()}
    assert errors[5] > errors[50] > errors[100]
    # Omitted: this server's own quality, as before.
    assert generated(client, output_format=fmt) == codec.encode(exact, fmt, codec.LOSSY_QUALITY)


def test_output_compression_applies_to_urls_and_streams(client: Any, server: str) -> None:
    import httpx

    # WebP at quality 20, asked for as a URL and as a stream
    webp_20: dict[str, Any] = {
        "prompt": "a red fox",
        "size": "128x128",
        "output_format": "webp",
        "output_compression": 20,
    }
    expected = codec.encode(codec.decode(generated(client)), "webp", 20)
    linked = client.images.generate(**webp_20, extra_body=QUICK, response_format="url")
    fetched = httpx.get(linked.data[0].url, timeout=30)
    assert fetched.content == expected and fetched.headers["content-type"] == "image/webp"
    assert linked.output_format == "webp"
    unseen = {"seed": 99, "steps": 4}  # not in the result cache: a hit has no partial images
    stream = client.images.generate(**webp_20, extra_body=unseen, stream=True, partial_images=1)
    events = list(stream)
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partial = base64.b64decode(events[0].b64_json)
    assert partial[8:12] == b"WEBP" and events[0].output_format == "webp"
    streamed = client.images.generate(prompt="a red fox", size="128x128", extra_body=unseen)
    exact = codec.decode(base64.b64decode(streamed.data[0].b64_json))
    assert base64.b64decode(events[1].b64_json) == codec.encode(exact, "webp", 20)


def test_png_ignores_output_compression_as_openai_does(client: Any) -> None:
    assert generated(client, output_compression=10) == generated(client, output_format="png")


def test_edits_take_output_compression_as_form_text(client: Any) -> None:
    def edit(**arguments: Any) -> bytes:
        result = client.images.edit(
            image=("photo.png", png(photo()), "image/png"),
            prompt="a red fox",
            extra_body=QUICK,
            output_format="jpeg",
            **arguments,
        )
        return base64.b64decode(result.data[0].b64_json)

    low, high = edit(output_compression=10), edit(output_compression=95)
    assert low[:3] == high[:3] == b"\xff\xd8\xff" and len(low) < len(high)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"output_compression": 101}, "less than or equal to 100"),
        ({"output_compression": -1}, "greater than or equal to 0"),
        ({"extra_body": {"output_compression": "50"}}, "an integer from 0 to 100, got '50'"),
        ({"extra_body": {"output_compression": True}}, "an integer from 0 to 100, got True"),
    ],
)
def test_a_bad_output_compression_is_a_400_naming_it(
    client: Any, arguments: dict[str, Any], named: str
) -> None:
    call = lambda: client.images.generate(prompt="x", **arguments)  # noqa: E731
    assert_bad_request(call, "output_compression", named)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("frame_count", 8),
        ("frame_duration_ms", 100),
        ("svg", {"max_paths": 10}),
        ("markup", ("m.svg", b"<svg/>", "image/svg+xml")),
    ],
)
def test_parameters_for_other_outputs_are_not_supported_by_this_server(
    client: Any, name: str, value: Any
) -> None:
    expected = f"{name} is not supported by this server"
    generate = lambda: client.images.generate(prompt="x", **{name: value})  # noqa: E731
    edit = lambda: client.images.edit(  # noqa: E731
        image=("photo.png", png(photo()), "image/png"), prompt="x", **{name: value}
    )
    for call in (edit,) if name == "markup" else (generate, edit):
        with pytest.raises(openai.BadRequestError) as raised:
            call()
        error = raised.value
        assert (error.status_code, error.param, error.code) == (400, name, "unsupported_parameter")
        assert (
            expected in error.body["message"] and "Unknown parameter" not in error.body["message"]
        )


def test_every_parameter_the_client_knows_is_handled_or_declined() -> None:
    """A parameter a new client release adds fails this test until it is translated, ignored
    or declined on purpose (``UNSUPPORTED``), instead of meeting "Unknown parameter"."""
    transport = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
    for method, params in (
        (openai.resources.images.Images.generate, GenerationParams),
        (openai.resources.images.Images.edit, EditParams),
    ):
        sent = set(inspect.signature(method).parameters) - transport
        assert sent - set(params.model_fields) - set(UNSUPPORTED) == set(), method.__name__


def test_several_edit_images_are_refused_saying_why(client: Any) -> None:
    images = [("a.png", png(photo()), "image/png"), ("b.png", png(photo(seed=1)), "image/png")]
    call = lambda: client.images.edit(image=images, prompt="x")  # noqa: E731
    assert_bad_request(call, "image", "starts image-to-image from one init image")
