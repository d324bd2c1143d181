"""The Gradio UI at /ui, driven by real clients: gradio_client and a headless Chromium.

The server runs in-process (uvicorn in a thread) around an service the test holds, so the tests
can see that UI and API requests land in the same batcher and the same counters.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from inference.http.app import create_app
from inference.models.mock import MockModel
from inference.schema import GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.servers import ROOT, serving_in_thread

pytest.importorskip("gradio")
from gradio_client import Client

ARTIFACTS = ROOT / "test-artifacts"
# Debian's package, or a Chromium found on PATH (another distribution, a laptop).
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Batches of at most two images; tight step and pixel limits that the UI must respect.
SETTINGS = {"max_batch_size": 2, "max_steps": 50, "max_pixels": 256 * 256, "ui": True}
# Positional inputs of the UI's "generate" endpoint, in order.
UI_INPUTS = (
    "prompt",
    "negative_prompt",
    "seed",
    "randomize_seed",
    "prompt_weight",
    "steps",
    "width",
    "height",
    "num_outputs",
    "scheduler",
    "loras",
    "image",  # the image controls sit in their own section, after the others
    "mask",
    "strength",
)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    svc = Service(MockModel(), Settings(**SETTINGS)).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def url(service: Service) -> Iterator[str]:
    with serving_in_thread(create_app(Settings(**SETTINGS), service)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Client:
    return Client(url + "/ui/", verbose=False)


def ui_request(**fields: Any) -> list[Any]:
    values = {
        "prompt": "",
        "negative_prompt": "",
        "seed": 0,
        "randomize_seed": False,
        "prompt_weight": 1.0,
        "steps": 20,
        "width": 256,
        "height": 256,
        "num_outputs": 1,
        "scheduler": "",  # the model's own
        "image": None,  # text-to-image
        "mask": None,
        "strength": 0.8,  # the slider's value; sent only with an image
        "loras": "",  # the server's default adapters (none)
        **fields,
    }
    return [values[name] for name in UI_INPUTS]


def gallery_bytes(gallery: list[dict[str, Any]]) -> list[bytes]:
    """The files gradio_client downloaded for a Gallery output."""
    return [Path(item["image"]).read_bytes() for item in gallery]


def api_images(url: str, **request: Any) -> list[bytes]:
    response = httpx.post(url + "/predict", json=request, timeout=60)
    assert response.status_code == 200, response.text
    return [base64.b64decode(image["data"]) for image in response.json()["images"]]


def test_gradio_client_gets_the_same_png_bytes_as_predict(client: Client, url: str) -> None:
    request = {
        "prompt": "a red fox",
        "negative_prompt": "fog",
        "seed": 42,
        "prompt_weight": 0.7,
        "steps": 12,
        "width": 128,
        "height": 96,
        "num_outputs": 2,
    }
    gallery, seed_used, timings = client.predict(*ui_request(**request), api_name="/generate")
    ui_bytes = gallery_bytes(gallery)
    assert seed_used == 42
    assert ui_bytes[0].startswith(b"\x89PNG\r\n\x1a\n")
    assert ui_bytes == api_images(url, **request)
    assert re.search(r"queue \d+ ms · inference \d+ ms · encode \d+ ms · total \d+ ms", timings)


def test_gradio_client_with_an_image_and_mask_gets_the_apis_bytes(
    client: Client, url: str, tmp_path: Path
) -> None:
    """Uploads reach the service as the very bytes sent: a 1.5 MB photo (over MAX_BODY_BYTES:
    the UI's upload route gets the image limit) and a mask give /predict's image."""
    import numpy as np
    from gradio_client import handle_file

    from tests.test_img2img import half_mask, png

    photo = png(np.random.default_rng(3).integers(0, 256, (720, 720, 3), dtype=np.uint8))
    assert len(photo) > Settings().max_body_bytes
    (tmp_path / "photo.png").write_bytes(photo)
    (tmp_path / "mask.png").write_bytes(png(half_mask(720, 720)))
    shape = {"seed": 5, "steps": 6, "width": 96, "height": 64, "strength": 0.6}
    gallery, _, _ = client.predict(
        *ui_request(
            **shape,
            image=handle_file(str(tmp_path / "photo.png")),
            mask=handle_file(str(tmp_path / "mask.png")),
        ),
        api_name="/generate",
    )
    b64 = {
        name: base64.b64encode((tmp_path / f"{name}.png").read_bytes()).decode()
        for name in ("photo", "mask")
    }
    assert gallery_bytes(gallery) == api_images(url, **shape, image=b64["photo"], mask=b64["mask"])


def test_a_call_written_before_the_image_inputs_still_works(client: Client, url: str) -> None:
    """The upload parameters are optional: older positional calls keep their meaning, and every
    parameter has the field's name."""
    old_call = ui_request(seed=3, steps=4, width=64, height=64)[:10]
    gallery, seed_used, _ = client.predict(*old_call, api_name="/generate")
    assert seed_used == 3
    assert gallery_bytes(gallery) == api_images(url, seed=3, steps=4, width=64, height=64)
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [p["parameter_name"] for p in parameters["/generate"]["parameters"]]
    assert names == list(UI_INPUTS)


def test_a_call_that_names_its_inputs_needs_only_those(
    client: Client, url: str, tmp_path: Path
) -> None:
    """The README's image-to-image call: inputs by name, the rest left to the form's defaults
    (a positional call that skipped one put the photo in the LoRA box)."""
    import numpy as np
    from gradio_client import handle_file

    from tests.test_img2img import png

    (tmp_path / "photo.png").write_bytes(png(np.full((64, 64, 3), 90, dtype=np.uint8)))
    shape = {"seed": 8, "steps": 4, "width": 64, "height": 64, "strength": 0.6}
    gallery, seed_used, _ = client.predict(
        **shape,
        prompt="a red fox",
        randomize_seed=False,
        image=handle_file(str(tmp_path / "photo.png")),
        api_name="/generate",
    )
    assert seed_used == 8
    photo = base64.b64encode((tmp_path / "photo.png").read_bytes()).decode()
    assert gallery_bytes(gallery) == api_images(url, prompt="a red fox", **shape, image=photo)


def test_randomize_seed_draws_a_seed_and_reports_it(client: Client, url: str) -> None:
    gallery, seed_used, timings = client.predict(
        *ui_request(seed=42, randomize_seed=True, steps=4, width=64, height=64, num_outputs=2),
        api_name="/generate",
    )
    assert isinstance(seed_used, int)
    assert f"Seed **{seed_used}**" in timings
    again = api_images(url, seed=seed_used, steps=4, width=64, height=64, num_outputs=2)
    assert gallery_bytes(gallery) == again


def test_ui_and_api_requests_share_one_batch(client: Client, url: str, service: Service) -> None:
    """A UI request and an API request queued together are served by one model call."""
    busy, release = threading.Event(), threading.Event()

    def hold_the_worker(step: int, total: int) -> None:
        if not release.is_set():
            busy.set()
            release.wait(timeout=60)

    service.engine.add_step_listener(hold_the_worker)
    calls, images = service.engine.stats.model_calls, service.engine.stats.images_generated
    metrics_before = _images_metric(url)
    shape = {"steps": 3, "width": 72, "height": 72}
    with ThreadPoolExecutor(3) as pool:
        try:
            # A first request occupies the worker, so the next two queue up side by side.
            blocker = pool.submit(
                httpx.post, url + "/predict", json={"seed": 0, "steps": 2}, timeout=60
            )
            assert busy.wait(timeout=30), "the worker never started the first batch"
            ui = pool.submit(client.predict, *ui_request(seed=1, **shape), api_name="/generate")
            api = pool.submit(httpx.post, url + "/predict", json={"seed": 2, **shape}, timeout=60)
            deadline = time.monotonic() + 30
            while service.engine.queue_depth < 2:
                assert time.monotonic() < deadline, "the UI and API requests did not both queue"
                time.sleep(0.02)
        finally:
            release.set()
        assert blocker.result(timeout=60).status_code == 200
        _, _, timings = ui.result(timeout=60)
        api_result = api.result(timeout=60).json()
    assert api_result["batch_size"] == 2
    assert "batch of 2 images" in timings
    assert service.engine.stats.model_calls == calls + 2
    assert service.engine.stats.images_generated == images + 3
    assert _images_metric(url) == metrics_before + 3


def _images_metric(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    match = re.search(r"^inference_images_generated_total (\S+)$", text, re.MULTILINE)
    assert match, "inference_images_generated_total missing from /metrics"
    return float(match.group(1))


def test_ui_enforces_the_servers_limits(client: Client) -> None:
    # The slider's bound comes from MAX_STEPS; Gradio refuses beyond it.
    with pytest.raises(Exception, match=r"Value 60 is greater than maximum value 50"):
        client.predict(*ui_request(steps=60), api_name="/generate")
    # MAX_PIXELS has no slider of its own: the engine's check answers, word for word.
    with pytest.raises(Exception, match=r"width x height must be <= 65536 pixels .*MAX_PIXELS"):
        client.predict(*ui_request(width=512, height=256), api_name="/generate")


def test_ui_sliders_are_bounded_by_the_servers_limits(client: Client) -> None:
    config = httpx.get(client.src.rstrip("/") + "/config").json()
    sliders = {
        c["props"]["label"]: c["props"] for c in config["components"] if c.get("type") == "slider"
    }
    assert sliders["Steps"]["maximum"] == 50
    assert sliders["Width"]["maximum"] == 1024
    assert sliders["Width"]["step"] == 8


def test_the_form_has_an_input_for_every_request_field(client: Client) -> None:
    """Derived from the schema: a new GenerateRequest field appears with no UI edit."""
    config = httpx.get(client.src.rstrip("/") + "/config").json()
    ids = {c["props"].get("elem_id") for c in config["components"]}
    expected = {name.replace("_", "-") for name in GenerateRequest.model_fields}
    assert expected - {"output-format"} <= ids  # the gallery always shows PNG


def test_the_form_speaks_plain_words(client: Client) -> None:
    """Hints say what a person does, not how an API client encodes it; the adapters box has
    a plain label and an example; a mask can be painted besides uploaded."""
    config = httpx.get(client.src.rstrip("/") + "/config").json()
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"]}
    for elem_id, prop in props.items():
        text = f"{prop.get('info') or ''} {prop.get('placeholder') or ''}"
        for jargon in ("base64", "JSON", "multipart", "data: URI", "[] for none", "omit"):
            assert jargon not in text, f"{elem_id}: {text!r}"
    assert props["image"]["placeholder"] == "Upload a picture to start from it"
    assert props["loras"]["label"] == "LoRA adapters" and "e.g." in props["loras"]["info"]
    assert "mask-painter" in props


def test_ui_answers_with_how_to_enable_it_without_gradio(
    monkeypatch: pytest.MonkeyPatch, service: Service
) -> None:
    monkeypatch.setattr("inference.ui.gradio_available", lambda: False)
    with TestClient(create_app(Settings(**SETTINGS), service)) as http:
        for path in ("/ui", "/ui/", "/ui/config"):
            response = http.get(path)
            assert response.status_code == 501, path
            message = response.json()["error"]["message"]
            assert "pip install 'diffusion-serve[ui]'" in message
        assert http.get("/").status_code == 200


def test_ui_setting_off_answers_with_how_to_turn_it_on(service: Service) -> None:
    with TestClient(create_app(Settings(**{**SETTINGS, "ui": False}), service)) as http:
        response = http.get("/ui/")
    assert response.status_code == 501 and "UI=true" in response.json()["error"]["message"]


def test_ui_asks_for_the_token_when_auth_is_on(service: Service) -> None:
    settings = Settings(**SETTINGS, auth_token="s3cret")
    with serving_in_thread(create_app(settings, service)) as base:
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own types
            Client(base + "/ui/", verbose=False).predict(
                *ui_request(steps=2, width=64, height=64, num_outputs=2), api_name="/generate"
            )
        authed = Client(base + "/ui/", auth=("anyone", "s3cret"), verbose=False)
        _, seed_used, _ = authed.predict(
            *ui_request(seed=9, steps=2, width=64, height=64, num_outputs=2),
            api_name="/generate",
        )
        assert seed_used == 9


@contextmanager
def browser_page(width: int, height: int) -> Iterator[Any]:
    """A page in a real headless Chromium (the system's), in a fresh profile, at this size."""
    sync_api = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: run `bash scripts/install-system-deps.sh` (make test does)"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    profile = ARTIFACTS / f"chromium-profile-{width}x{height}"
    shutil.rmtree(profile, ignore_errors=True)
    with sync_api.sync_playwright() as playwright:
        # A fresh profile per run (Playwright passes it as --user-data-dir).
        browser = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": width, "height": height},
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)


def open_ui(page: Any, url: str) -> None:
    """Open /ui/ and wait until the form has rendered (a screenshot before that is blank)."""
    # Not "networkidle": offline, the theme's web-font request only ends by timing out.
    page.goto(url + "/ui/", wait_until="domcontentloaded", timeout=60_000)
    page.locator("#generate").wait_for(state="visible", timeout=60_000)


def wait_for_run(page: Any) -> Any:
    """The first image in the gallery, once a run has finished and reported its timings."""
    image = page.locator("#gallery img").first
    image.wait_for(state="visible", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#timings')?.innerText.includes('total')",
        timeout=60_000,
    )
    return image


def test_a_real_browser_generates_an_image(url: str) -> None:
    """Headless Chromium opens /ui/, types a prompt, clicks Generate and sees the image."""
    with browser_page(1280, 900) as page:
        open_ui(page, url)
        page.locator("#prompt textarea").fill("a red fox in the snow, watercolor")
        page.get_by_label("Randomize seed").uncheck()
        seed_box = page.get_by_label("Seed", exact=True)
        seed_box.fill("42")
        page.locator("#generate").click()
        image = wait_for_run(page)
        page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
        src = image.get_attribute("src")
        timings = page.locator("#timings").inner_text()
    assert src
    shown = httpx.get(src if src.startswith("http") else url + src, timeout=30).content
    assert "Seed 42" in timings
    assert [shown] == api_images(url, prompt="a red fox in the snow, watercolor", seed=42)


def test_a_laptop_screen_shows_generate_and_an_honest_seed(url: str) -> None:
    """At 1280x800, Generate shows without scrolling; the seed box is hidden while Randomize
    seed is ticked, and unticking it offers a seed; "Seed used" appears only after a run, with
    the seed that run used."""
    with browser_page(1280, 800) as page:
        open_ui(page, url)
        box = page.locator("#generate").bounding_box()
        assert box and box["y"] + box["height"] <= 800, box
        seed_box = page.get_by_label("Seed", exact=True)
        assert not seed_box.is_visible()
        assert not page.get_by_label("Seed used").is_visible()
        page.screenshot(path=str(ARTIFACTS / "ui-first-view.png"))

        page.locator("#prompt textarea").fill("a lighthouse at dusk, oil painting")
        page.get_by_label("Randomize seed").uncheck()
        seed_box.wait_for(state="visible", timeout=30_000)
        assert seed_box.input_value() == "42"
        page.locator("#generate").click()
        wait_for_run(page)
        seed_used = page.get_by_label("Seed used")
        seed_used.wait_for(state="visible", timeout=30_000)
        assert seed_used.input_value() == "42"
        page.screenshot(path=str(ARTIFACTS / "ui-after-run.png"))

        page.get_by_label("Randomize seed").check()
        seed_box.wait_for(state="hidden", timeout=30_000)


def test_a_mask_painted_on_the_picture_becomes_the_mask(url: str, tmp_path: Path) -> None:
    """Upload a picture, paint a stroke over it: the mask input gets a black-and-white mask of
    the picture's size, white where the stroke went."""
    import numpy as np
    from PIL import Image

    from tests.test_img2img import png

    photo = tmp_path / "photo.png"
    photo.write_bytes(png(np.full((96, 160, 3), (40, 120, 200), dtype=np.uint8)))
    with browser_page(1280, 900) as page:
        open_ui(page, url)
        page.get_by_role("button", name="Start from a picture").click()
        page.locator("#image input[type=file]").set_input_files(str(photo))
        canvas = page.locator("#mask-painter canvas").first
        canvas.wait_for(state="visible", timeout=60_000)
        canvas.scroll_into_view_if_needed()  # the mouse paints only inside the viewport
        page.wait_for_timeout(500)  # the editor draws the picture as its background
        area = canvas.bounding_box()
        assert area
        y = area["y"] + area["height"] / 2
        page.mouse.move(area["x"] + area["width"] * 0.3, y)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(area["x"] + area["width"] * (0.3 + 0.04 * i), y, steps=2)
        page.mouse.up()
        mask_img = page.locator("#mask img").first
        mask_img.wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui-mask-painted.png"), full_page=True)
        src = mask_img.get_attribute("src")
    assert src
    data = httpx.get(src if src.startswith("http") else url + src, timeout=30).content
    mask = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert mask.shape == (96, 160)
    assert set(np.unique(mask)) == {0, 255}
    assert mask[48, 80] == 255 and mask[5, 5] == 0  # the stroke crossed the middle only
