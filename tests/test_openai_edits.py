"""OpenAI's image edits, driven by the official ``openai`` client's ``images.edit``.

An edit is our image-to-image (no transparency anywhere) or inpainting where OpenAI says to
repaint: the mask's fully transparent pixels or, without a mask, the image's own. Each is
checked against POST /predict given the same image and our own mask (white repaints), so the
translation is proven byte for byte; errors come in OpenAI's shape naming the parameter.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")

from inference.codec import decode  # noqa: E402
from inference.errors import PayloadTooLarge  # noqa: E402
from inference.http.protocols.openai.params import openai_mask  # noqa: E402
from inference.settings import Settings  # noqa: E402
from tests.servers import inference_server  # noqa: E402
from tests.test_img2img import half_mask, photo, png  # noqa: E402
from tests.test_openai import (  # noqa: E402
    TOKEN,
    assert_bad_request,
    official_client,
    predict,
    server_and_client_fixtures,
)

QUICK = {"seed": 11, "steps": 4}

server, client = server_and_client_fixtures()


def rgba(pixels: np.ndarray, alpha: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([pixels, alpha]), mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def images(result: Any) -> list[bytes]:
    return [base64.b64decode(item.b64_json) for item in result.data]


def test_an_opaque_image_without_a_mask_is_image_to_image(client: Any, server: str) -> None:
    image = png(photo(64, 96))
    result = client.images.edit(
        image=("photo.png", image, "image/png"),
        prompt="a red fox",
        n=2,
        extra_body={**QUICK, "strength": 0.6},
    )
    assert (result.size, result.output_format) == ("96x64", "png")  # the image's own size
    expected = predict(
        server, prompt="a red fox", image=image, num_outputs=2, strength=0.6, **QUICK
    )
    assert images(result) == expected
    assert [item.seed for item in result.data] == [11, 12]


def test_the_masks_transparent_pixels_are_repainted(client: Any, server: str) -> None:
    image, repaint = png(photo(64, 96)), half_mask(64, 96) == 255
    mask = rgba(photo(64, 96, seed=5), np.where(repaint, 0, 255).astype(np.uint8))
    result = client.images.edit(
        image=("photo.png", image, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="a red fox",
        size="96x64",
        extra_body=QUICK,
    )
    ours = png(np.where(repaint, 255, 0).astype(np.uint8))  # white repaints
    assert images(result) == predict(server, prompt="a red fox", image=image, mask=ours, **QUICK)
    kept = decode(images(result)[0])[:, 48:]
    assert np.array_equal(kept, photo(64, 96)[:, 48:])  # the opaque half is the image


def test_without_a_mask_the_images_own_transparency_is_repainted(client: Any, server: str) -> None:
    pixels, alpha = photo(64, 96), np.full((64, 96), 255, dtype=np.uint8)
    alpha[:20, :] = 0
    result = client.images.edit(image=rgba(pixels, alpha), prompt="a roof", extra_body=QUICK)
    # Our image composites transparency over white; our mask is white where alpha was 0.
    flat = np.where(alpha[..., None] == 0, 255, pixels).astype(np.uint8)
    ours = png(np.where(alpha == 0, 255, 0).astype(np.uint8))
    expected = predict(server, prompt="a roof", image=png(flat), mask=ours, **QUICK)
    assert images(result) == expected


def test_edits_stream_partial_images_then_the_image(client: Any, server: str) -> None:
    image = png(photo(64, 64))
    events = list(
        client.images.edit(
            image=("photo.png", image, "image/png"),
            prompt="a heron",
            stream=True,
            partial_images=2,
            extra_body={"seed": 31, "steps": 6},
        )
    )
    kinds = [event.type for event in events]
    assert kinds == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    final = base64.b64decode(events[-1].b64_json)
    assert final == predict(server, prompt="a heron", image=image, seed=31, steps=6)[0]
    assert events[-1].usage.total_tokens == 0


def test_url_responses_work_for_edits(client: Any, server: str) -> None:
    image = png(photo(64, 64))
    result = client.images.edit(
        image=("photo.png", image, "image/png"),
        prompt="a fox",
        response_format="url",
        extra_body=QUICK,
    )
    fetched = httpx.get(result.data[0].url)
    assert fetched.status_code == 200
    assert fetched.content == predict(server, prompt="a fox", image=image, **QUICK)[0]


@pytest.mark.parametrize(
    ("arguments", "param", "named"),
    [
        ({"mask": png(half_mask(64, 96))}, "mask", "mask has no alpha channel"),
        (
            {"mask": rgba(photo(32, 32), np.zeros((32, 32), np.uint8))},
            "mask",
            "mask is 32x32 but image is 96x64",
        ),
        ({"image": [png(photo()), png(photo(seed=1))]}, "image", "one image per request, got 2"),
        ({"image": b"hello, world"}, "image", "image is not an image this server reads"),
        ({"size": "100x64"}, "size", "size: width must be a multiple of 8"),
        ({"n": 3}, "n", "n must be <= 2 on this server"),
        ({"stream": "maybe"}, "stream", "stream"),
        ({"extra_body": {"strength": 2}}, "strength", "strength"),
        ({"extra_body": {"seeed": 1}}, "seeed", "Unknown parameter: 'seeed'"),
        ({"extra_body": {"seed": "1" * 5000}}, "seed", "seed must be an integer"),
        ({"extra_body": {"partial_images": "2" * 5000}}, "partial_images", "integer from 0"),
    ],
)
def test_bad_edits_are_400s_in_openais_shape_naming_the_parameter(
    client: Any, arguments: dict[str, Any], param: str, named: str
) -> None:
    request: dict[str, Any] = {"image": png(photo()), "prompt": "x", **arguments}
    if request.get("stream") == "maybe":  # the client types stream; send the form part raw
        request.pop("stream")
        request["extra_body"] = {"stream": "maybe"}
    assert_bad_request(lambda: client.images.edit(**request), param, named)


def test_an_edit_needs_an_image_sent_as_multipart(server: str) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    url = f"{server}/v1/images/edits"
    missing = httpx.post(url, data={"prompt": "x"}, files={"mask": b"x"}, headers=headers)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"
    text_parts = {"prompt": (None, "x"), "image": (None, "photo.png")}
    as_text = httpx.post(url, files=text_parts, headers=headers)
    assert as_text.json()["error"]["param"] == "image"
    assert "file upload" in as_text.json()["error"]["message"]
    as_json = httpx.post(url, json={"prompt": "x"}, headers=headers)
    assert as_json.status_code == 400 and "multipart/form-data" in as_json.text


def test_edits_check_the_bearer_token(server: str) -> None:
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.images.edit(image=png(photo()), prompt="x")
    assert raised.value.code == "invalid_api_key"


def test_an_image_over_the_byte_limit_is_refused_before_it_is_read() -> None:
    image = png(photo(64, 96))
    with pytest.raises(PayloadTooLarge, match="MAX_IMAGE_BYTES"):
        openai_mask(image, None, Settings(max_image_bytes=len(image) - 1))
    assert openai_mask(image, None, Settings(max_image_bytes=len(image))) is None  # opaque
    # Bytes that are no image: read first, they would be "not an image"; the size comes first.
    junk = b"x" * (len(image) + 1)
    with pytest.raises(PayloadTooLarge, match=f"mask is {len(junk)} bytes"):
        openai_mask(image, junk, Settings(max_image_bytes=len(image)))


def test_the_served_process_edits_like_predict() -> None:
    """``python -m inference serve`` (a subprocess, as deployed), the official client's edit
    with a transparent-hole mask, and /predict given our own mask: the same bytes."""
    image, repaint = png(photo(64, 96)), half_mask(64, 96) == 255
    mask = rgba(photo(64, 96, seed=5), np.where(repaint, 0, 255).astype(np.uint8))
    with inference_server(env={"AUTH_TOKEN": TOKEN, "UI": "false"}) as url:
        client = official_client(url)
        result = client.images.edit(
            image=("photo.png", image, "image/png"),
            mask=("mask.png", mask, "image/png"),
            prompt="a red fox",
            extra_body=QUICK,
        )
        ours = png(np.where(repaint, 255, 0).astype(np.uint8))
        expected = predict(url, prompt="a red fox", image=image, mask=ours, **QUICK)
    assert (result.size, images(result)) == ("96x64", expected)
