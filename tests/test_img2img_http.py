"""Image inputs through real clients: httpx and curl against the server subprocess (JSON with
base64 or data: URIs, and multipart uploads), and URL fetching against a local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from PIL import Image

from inference.errors import InvalidRequest, PayloadTooLarge
from inference.models.mock import MockModel
from inference.schema import Job
from inference.service import Service
from inference.settings import Settings
from tests.conftest import make_service
from tests.test_images import encoded, png_header
from tests.test_img2img import half_mask, photo, png

FIELDS = {"prompt": "a red fox", "seed": 7, "steps": 6, "strength": 0.7}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def direct() -> Iterator[Service]:
    service = make_service()
    yield service
    service.stop()


def as_form(fields: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in fields.items()}


def test_multipart_json_and_the_engine_give_the_same_bytes(
    server_url: str, direct: Service
) -> None:
    image, mask = png(photo()), png(half_mask())
    expected = direct.generate({**FIELDS, "image": image, "mask": mask, "num_outputs": 2})
    multipart = httpx.post(
        f"{server_url}/predict",
        data=as_form({**FIELDS, "num_outputs": 2}),
        files={"image": ("photo.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")},
        timeout=60,
    )
    assert multipart.status_code == 200, multipart.text
    as_json = httpx.post(
        f"{server_url}/predict",
        json={
            **FIELDS,
            "num_outputs": 2,
            "image": b64(image),
            "mask": f"data:image/png;base64,{b64(mask)}",
        },
        timeout=60,
    )
    assert as_json.status_code == 200, as_json.text
    for body in (multipart.json(), as_json.json()):
        assert [base64.b64decode(i["data"]) for i in body["images"]] == [
            i.data for i in expected.images
        ]
        assert body["images"][0]["width"] == 96 and body["images"][0]["height"] == 64
    # Replicate's name for strength, and the raw PNG for Accept: image/png.
    raw = httpx.post(
        f"{server_url}/predict",
        data=as_form({"prompt": "a red fox", "seed": 7, "steps": 6, "prompt_strength": 0.7}),
        files={"image": ("photo.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")},
        headers={"accept": "image/png"},
        timeout=60,
    )
    assert raw.status_code == 200 and raw.content == expected.images[0].data


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_upload(server_url: str, direct: Service, tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(png(photo()))
    done = subprocess.run(
        [
            *("curl", "-s", "-f", "-X", "POST", f"{server_url}/predict", "-H", "accept: image/png"),
            *("-F", "image=@photo.png", "-F", "prompt=a red fox", "-F", "seed=7"),
            *("-F", "steps=6", "-F", "strength=0.7", "-o", "fox.png"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = direct.generate({**FIELDS, "image": png(photo())})
    assert (tmp_path / "fox.png").read_bytes() == expected.images[0].data


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])


BAD_UPLOADS = [
    (
        {"image": bytes(range(256)) * 8},
        {},
        422,
        "image",
        "image is not an image this server reads: 2048 bytes",
    ),
    ({"image": b"a red fox\n"}, {}, 422, "image", "text ('a red fox\\n')"),
    ({"image": b'<svg xmlns="http://www.w3.org/2000/svg"/>'}, {}, 422, "image", "an SVG"),
    ({"image": "TRUNCATED"}, {}, 422, "image", "truncated or damaged"),
    ({"image": png_header(100_000, 100_000)}, {}, 413, "image", "declares too many pixels"),
    ({"image": png_header(6000, 6000)}, {}, 413, "image", "(MAX_IMAGE_PIXELS=25000000)"),
    ({"image": "GIF"}, {}, 422, "image", "an animated GIF of 2 frames"),
    ({"image": "PHOTO", "mask": "SMALL"}, {}, 422, "mask", "mask is 48x32 but image is 96x64"),
    ({"mask": "MASK"}, {}, 422, "mask", "mask needs an image"),
    ({"image": "PHOTO"}, {"strength": "1.5"}, 422, "strength", "less than or equal to 1"),
    ({}, {"strength": "0.5"}, 422, "strength", "strength needs an image"),
    ({"image": "PHOTO"}, {"seed": "1", "stength": "0.5"}, 422, "stength", "Extra inputs"),
    ({"image": b"\x00" * 10_000_001}, {}, 413, "image", "(MAX_IMAGE_BYTES=10000000)"),
]


def _upload(name: str) -> bytes:
    photo_png = png(photo())
    return {
        "PHOTO": photo_png,
        "TRUNCATED": photo_png[: len(photo_png) // 2],
        "GIF": _animated_gif(),
        "SMALL": png(half_mask(32, 48)),
        "MASK": png(half_mask()),
    }[name]


@pytest.mark.parametrize(("files", "data", "status", "field", "text"), BAD_UPLOADS)
def test_each_bad_upload_gets_a_4xx_naming_the_field(
    server_url: str, files: dict[str, Any], data: dict[str, str], status: int, field: str, text: str
) -> None:
    uploads = {
        name: (name + ".bin", _upload(value) if isinstance(value, str) else value)
        for name, value in files.items()
    }
    response = httpx.post(f"{server_url}/predict", data=data, files=uploads or None, timeout=60)
    if not uploads:  # a form without files: send it as multipart all the same
        response = httpx.post(
            f"{server_url}/predict", files={name: (None, value) for name, value in data.items()}
        )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and text in error["message"], error


def test_bad_json_images_and_the_server_keeps_serving(server_url: str) -> None:
    for value, text in (
        ("not base64!", "image is not base64 image data"),
        ("data:image/png,abc", "a data: URI must be base64-encoded"),
        ("https://example.com/fox.png", "does not fetch image URLs (INPUT_URL_HOSTS is empty)"),
        (b64(b"plain text, not a picture"), "text ('plain text, not a picture')"),
    ):
        response = httpx.post(f"{server_url}/predict", json={"image": value}, timeout=30)
        assert response.status_code == 422, response.text
        assert text in response.json()["error"]["message"]
    good = httpx.post(
        f"{server_url}/predict", json={**FIELDS, "image": b64(png(photo()))}, timeout=60
    )
    assert good.status_code == 200


def test_concurrent_image_requests_share_model_calls_without_changing_bytes(
    server_url: str, direct: Service
) -> None:
    seeds = range(20, 26)
    images = {seed: png(photo(seed=seed)) for seed in seeds}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server_url, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/predict", json={**FIELDS, "seed": s, "image": b64(images[s])})
                    for s in seeds
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * len(seeds)
    assert max(r.json()["batch_size"] for r in responses) > 1
    for seed, response in zip(seeds, responses, strict=True):
        solo = direct.generate({**FIELDS, "seed": seed, "image": images[seed]})
        assert base64.b64decode(response.json()["images"][0]["data"]) == solo.images[0].data


# -- image URLs: off by default; allowed hosts only, public addresses only, bounded ----------


class _Images(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        if self.path == "/slow.png":
            time.sleep(1.5)
        if self.path == "/moved.png":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
            return
        data = self.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    _Images.files = {"/fox.png": png(photo()), "/slow.png": png(photo()), "/big.png": bytes(5000)}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _job(url: str, **settings: Any) -> Job:
    """Validation alone (no engine): that is where a URL is fetched."""
    return Service(MockModel(), Settings(**settings)).validator.job({"image": url, "seed": 1})


def test_image_urls_are_refused_unless_the_host_is_allowed(image_host: str) -> None:
    url = f"{image_host}/fox.png"
    for settings, text in (
        ({}, "does not fetch image URLs (INPUT_URL_HOSTS is empty)"),
        (
            {"input_url_hosts": "images.example.com"},
            "host '127.0.0.1' of 'http://127.0.0.1:",
        ),
        ({"input_url_hosts": "127.0.0.1"}, "is a loopback address"),
    ):
        with pytest.raises(InvalidRequest) as info:
            _job(url, **settings)
        assert info.value.field == "image" and text in info.value.message


def test_an_allowed_url_gives_the_same_job_as_the_bytes(image_host: str, direct: Service) -> None:
    allowed = {"input_url_hosts": "127.0.0.1", "input_url_allow_private": True}
    job = _job(f"{image_host}/fox.png", **allowed)
    assert job.image == direct.job({"image": png(photo()), "seed": 1}).image
    for path, settings, error, text in (
        ("/missing.png", {}, InvalidRequest, "answered 404"),
        (
            "/moved.png",
            {},
            InvalidRequest,
            "answered 302 Found, a redirect to 'http://169.254.169.254/",
        ),
        ("/big.png", {"max_image_bytes": 4096}, PayloadTooLarge, "over the 4096-byte cap"),
        (
            "/slow.png",
            {"input_url_deadline_s": 0.3},
            InvalidRequest,
            "within 0.3s (INPUT_URL_DEADLINE_S)",
        ),
    ):
        with pytest.raises(error) as info:
            _job(image_host + path, **allowed, **settings)
        assert text in info.value.message, path
