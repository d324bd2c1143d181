"""One result policy, rendered by each protocol in its own shape (docs/architecture.md,
"Result policy"): safety-flagged images, and the refusals of a model that is not serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from inference.http.app import create_app
from inference.results import ALL_FLAGGED
from inference.service import Service
from inference.settings import Settings
from tests.fakes import FlaggingModel
from tests.servers import serving_in_thread

#: Seeds 2 and 3: the second image is flagged (the model flags odd seeds); seed 3 alone: all.
ONE_OF_TWO = {"seed": 2, "num_outputs": 2, "steps": 2, "width": 64, "height": 64}
ALL = {"seed": 3, "num_outputs": 1, "steps": 2, "width": 64, "height": 64}
WAIT = {"Prefer": "wait"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    settings = Settings(ui=False, max_wait_ms=0)
    service = Service(FlaggingModel(), settings).start()
    with serving_in_thread(create_app(settings, service)) as url:
        yield url
    service.stop()


def test_native_keeps_flagged_images_and_says_so(url: str) -> None:
    body = httpx.post(f"{url}/predict", json=ONE_OF_TWO, timeout=30).json()
    assert [image["nsfw"] for image in body["images"]] == [False, True]
    raw = httpx.post(f"{url}/predict", json=ALL, headers={"Accept": "image/png"}, timeout=30)
    assert raw.status_code == 200 and raw.headers["x-nsfw"] == "true"


def test_replicate_leaves_flagged_images_out_and_fails_when_none_is_left(url: str) -> None:
    create = f"{url}/v1/predictions"
    some = httpx.post(create, json={"input": ONE_OF_TWO}, headers=WAIT, timeout=30).json()
    assert some["status"] == "succeeded" and len(some["output"]) == 1
    assert "NSFW content detected in image 1" in some["logs"]
    none = httpx.post(create, json={"input": ALL}, headers=WAIT, timeout=30).json()
    assert none["status"] == "failed" and none["error"] == ALL_FLAGGED and none["output"] is None


def test_cog_leaves_flagged_images_out_and_fails_when_none_is_left(url: str) -> None:
    some = httpx.post(f"{url}/predictions", json={"input": ONE_OF_TWO}, timeout=30).json()
    assert some["status"] == "succeeded" and len(some["output"]) == 1
    none = httpx.post(f"{url}/predictions", json={"input": ALL}, timeout=30).json()
    assert none["status"] == "failed" and none["error"] == ALL_FLAGGED


class GatedLoad(FlaggingModel):
    """Loads once ``loaded`` is set: the app stays in its loading phase until then."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded = threading.Event()

    def load(self) -> None:
        self.loaded.wait(60)
        super().load()


def test_not_serving_is_worded_once_for_every_protocol() -> None:
    """Loading, then shutting down: the engine's words, in each protocol's shape."""
    settings = Settings(ui=False, max_wait_ms=0)
    model = GatedLoad()
    service = Service(model, settings)
    calls = {
        "native": ("/predict", ALL),
        "replicate": ("/v1/predictions", {"input": ALL}),
        "cog": ("/predictions", {"input": ALL}),
        "openai": ("/v1/images/generations", {"prompt": "x", "size": "64x64"}),
    }
    with serving_in_thread(create_app(settings, service)) as url:
        for phase, words in (("loading", "still loading"), ("draining", "shutting down")):
            if phase == "draining":
                model.loaded.set()
                deadline = time.monotonic() + 60
                while not service.engine.ready and time.monotonic() < deadline:
                    time.sleep(0.05)
                service.drain(0)
            for name, (path, body) in calls.items():
                answer = httpx.post(url + path, json=body, timeout=30)
                assert answer.status_code == 503, (phase, name, answer.text)
                assert words in answer.text, (phase, name, answer.text)
    service.stop()


def test_a_request_with_an_image_after_stop_is_shutting_down_not_a_500() -> None:
    """``stop`` shuts the blocking pool down too; a late request with an image gets the one
    "shutting down" answer instead of the pool's own RuntimeError."""
    import asyncio
    import base64

    from inference.errors import NotReady
    from inference.models.mock import MockModel
    from tests.test_img2img import photo, png

    service = Service(MockModel(), Settings(ui=False)).start()
    service.stop()
    image = base64.b64encode(png(photo(64, 64))).decode()
    request = {"prompt": "x", "image": image, "width": 64, "height": 64}
    with pytest.raises(NotReady, match="shutting down"):
        asyncio.run(service.submit(request))
