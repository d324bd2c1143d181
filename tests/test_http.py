"""The HTTP API through a real uvicorn server on 127.0.0.1 and real httpx clients."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from inference.codec import decode
from inference.http.app import create_app
from inference.models.mock import MockModel
from inference.schema import GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel
from tests.servers import inference_server, serving_in_thread
from tests.test_img2img import photo, png

QUICK = {"width": 64, "height": 64, "steps": 4}


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_service_routes(server_url: str) -> None:
    assert httpx.get(f"{server_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server_url}/ready").json()["ready"] is True
    info = httpx.get(f"{server_url}/").json()
    assert info["model"] == "mock" and info["defaults"]["steps"] == 20
    assert info["limits"]["max_batch_size"] == 8 and info["auth"] is False
    head = httpx.head(f"{server_url}/")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(f"{server_url}/docs").status_code == 200
    schema = httpx.get(f"{server_url}/openapi.json").json()["components"]["schemas"]
    assert (
        "Guidance strength"
        in schema["GenerateRequest"]["properties"]["prompt_weight"]["description"]
    )


def test_predict_returns_a_decodable_png_of_the_requested_size(server_url: str) -> None:
    body = {"prompt": "a red fox", "seed": 42, "prompt_weight": 0.7, "width": 96, "height": 64}
    response = httpx.post(f"{server_url}/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    result = response.json()
    image = result["images"][0]
    assert (image["seed"], image["media_type"], result["model"]) == (42, "image/png", "mock")
    assert decode(base64.b64decode(image["data"])).shape == (64, 96, 3)
    assert set(result["timings"]) == {"queue_ms", "inference_ms", "encode_ms", "total_ms"}


def test_quick_start_request_is_reproducible_and_equals_the_engine(server_url: str) -> None:
    """The README's curl: same bytes twice, and the same bytes as the engine in-process."""
    body = {"seed": 42, "prompt_weight": 0.7}
    headers = {"accept": "image/png"}
    first = httpx.post(f"{server_url}/predict", json=body, headers=headers, timeout=30)
    second = httpx.post(f"{server_url}/predict", json=body, headers=headers, timeout=30)
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.headers["x-seed"] == "42" and "inference;dur=" in first.headers["server-timing"]
    assert first.content == second.content
    service = Service(MockModel(), Settings()).start()
    assert first.content == service.generate(GenerateRequest(**body)).images[0].data
    service.stop()


def test_accept_of_another_image_type_or_several_images_is_refused(server_url: str) -> None:
    gif = httpx.post(f"{server_url}/predict", json=QUICK, headers={"accept": "image/gif"})
    assert gif.status_code == 406 and "image/png" in gif.json()["error"]["message"]
    several = httpx.post(
        f"{server_url}/predict", json={"num_outputs": 2, **QUICK}, headers={"accept": "image/png"}
    )
    assert several.status_code == 422 and several.json()["error"]["field"] == "num_outputs"


def test_accept_header_picks_the_format(server_url: str) -> None:
    r = httpx.post(
        f"{server_url}/predict", json={"seed": 1, **QUICK}, headers={"accept": "image/webp"}
    )
    assert r.headers["content-type"] == "image/webp" and r.content[8:12] == b"WEBP"
    conflict = httpx.post(
        f"{server_url}/predict",
        json={"seed": 1, "output_format": "png", **QUICK},
        headers={"accept": "image/jpeg"},
    )
    assert conflict.status_code == 422 and conflict.json()["error"]["field"] == "output_format"
    as_json = httpx.post(
        f"{server_url}/predict", json={"seed": 1, **QUICK}, headers={"accept": "application/json"}
    )
    assert as_json.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"width": 1004}, "width", "width must be a multiple of 8, got 1004"),
        ({"steps": 101}, "steps", "steps must be <= 100 on this server (MAX_STEPS), got 101"),
        ({"seed": "abc"}, "seed", 'seed must be an integer, got "abc"'),
        ({"prompt_weight": 99}, "prompt_weight", "less than or equal to 30, got 99"),
        ({"output_format": "gif"}, "output_format", "'png', 'jpeg' or 'webp'"),
        ({"promt": "typo"}, "promt", "promt: Extra inputs are not permitted"),
    ],
)
def test_invalid_input_gets_422_naming_the_field(
    server_url: str, body: dict, field: str, text: str
) -> None:
    response = httpx.post(f"{server_url}/predict", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and text in error["message"]
    # One shape for every 422: the first culprit in `field`, each problem in `errors`.
    assert error["field"] == field and field in [e["field"] for e in error["errors"]]


def test_malformed_bodies_get_a_message_that_says_what_to_send(server_url: str) -> None:
    broken = httpx.post(
        f"{server_url}/predict", content=b'{"seed": 4', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.json()["error"]["message"].startswith("the body is not valid JSON (")
    untyped = httpx.post(f"{server_url}/predict", content=b'{"seed": 4}')  # curl -d, no -H
    assert "'Content-Type: application/json'" in untyped.json()["error"]["message"]
    fraction = httpx.post(f"{server_url}/predict", json={"seed": 4.5}).json()["error"]
    assert fraction["message"].endswith("fractional part (4.5)")
    long = httpx.post(f"{server_url}/predict", json={"prompt": "x" * 3000}).json()["error"]
    assert "(3000 characters)" in long["message"] and len(long["message"]) < 200
    # In a batch, a schema problem is that item's error, like a limit: the others are served.
    nested = httpx.post(
        f"{server_url}/predict/batch", json={"requests": [{"width": 1004}, {**QUICK, "seed": 1}]}
    )
    assert nested.status_code == 200, nested.text
    bad, good = nested.json()["results"]
    assert bad["error"] == {
        "type": "invalid_request",
        "message": "width must be a multiple of 8, got 1004 (try 1000 or 1008)",
        "field": "width",
    }
    assert good["result"]["seed"] == 1


def test_oversized_body_gets_413_by_header_and_by_stream(server_url: str) -> None:
    """/predict bodies may carry two images: MAX_BODY_BYTES plus room for them, no more."""
    limit = Settings().max_image_body_bytes
    over_plain_limit = b'{"prompt": "' + b"x" * 1_100_000 + b'"}'
    response = httpx.post(
        f"{server_url}/predict",
        content=over_plain_limit,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "prompt"
    big = b'{"prompt": "' + b"x" * limit + b'"}'
    response = httpx.post(
        f"{server_url}/predict", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert (
        f"larger than {limit} bytes (MAX_BODY_BYTES plus two images of MAX_IMAGE_BYTES)"
        in (response.json()["error"]["message"])
    )

    def chunks():  # no content-length: the limit is enforced while reading
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    streamed = httpx.post(
        f"{server_url}/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    metrics = httpx.get(f"{server_url}/metrics").text
    # Refused bodies are counted too: by header before routing, by stream on the route.
    assert 'method="POST",route="unmatched",status="413"' in metrics
    assert 'method="POST",route="/predict",status="413"' in metrics


def test_unknown_route_is_json_404(server_url: str) -> None:
    response = httpx.get(f"{server_url}/nope")
    assert response.status_code == 404 and response.json()["error"]["type"] == "http_error"


def test_32_concurrent_requests_all_succeed_with_fewer_model_calls(server_url: str) -> None:
    before = httpx.get(f"{server_url}/metrics").text

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server_url, timeout=60) as client:
            return await asyncio.gather(
                # A prompt of its own: the result cache must not serve earlier tests' requests.
                *(
                    client.post("/predict", json={"seed": i, "prompt": "burst", **QUICK})
                    for i in range(32)
                )
            )

    responses = asyncio.run(burst())
    after = httpx.get(f"{server_url}/metrics").text
    assert [r.status_code for r in responses] == [200] * 32
    calls = metric(after, "inference_batch_size_images_count") - metric(
        before, "inference_batch_size_images_count"
    )
    images = metric(after, "inference_images_generated_total") - metric(
        before, "inference_images_generated_total"
    )
    assert images == 32 and 1 <= calls < 32
    assert max(r.json()["batch_size"] for r in responses) > 1


def test_metrics_count_requests_latency_batches_and_queue(server_url: str) -> None:
    httpx.post(f"{server_url}/predict", json={"seed": 5, **QUICK})
    httpx.post(f"{server_url}/predict", json={"width": 1004})
    text = httpx.get(f"{server_url}/metrics").text
    assert metric(text, "http_requests_total", route="/predict", status="200") >= 1
    assert metric(text, "http_requests_total", route="/predict", status="422") >= 1
    assert metric(text, "http_request_duration_seconds_count", route="/predict") >= 2
    assert metric(text, "inference_model_ready") == 1
    for name in (
        "inference_queue_depth",
        "inference_batch_size_images_bucket",
        "inference_denoising_steps_total",
        "inference_model_load_seconds",
    ):
        assert name in text


def test_batch_route_keeps_order_and_reports_errors_per_item(server_url: str) -> None:
    body = {
        "requests": [{"seed": 1, **QUICK}, {"seed": 2, **QUICK, "steps": 101}, {"seed": 3, **QUICK}]
    }
    response = httpx.post(f"{server_url}/predict/batch", json=body, timeout=30)
    assert response.status_code == 200
    items = response.json()["results"]
    assert [i["result"]["seed"] if i["result"] else None for i in items] == [1, None, 3]
    assert items[1]["error"]["field"] == "steps" and "MAX_STEPS" in items[1]["error"]["message"]
    too_many = httpx.post(f"{server_url}/predict/batch", json={"requests": [{}] * 17})
    assert too_many.status_code == 422 and "MAX_BATCH_REQUESTS" in too_many.text


def test_auth_token_protects_inference_and_metrics_only() -> None:
    with inference_server(env={"AUTH_TOKEN": "s3cret"}) as url:
        body = {"seed": 1, **QUICK}
        missing = httpx.post(f"{url}/predict", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "Bearer" in missing.json()["error"]["message"]
        wrong = httpx.post(f"{url}/predict", json=body, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = {"authorization": "Bearer s3cret"}
        assert httpx.post(f"{url}/predict", json=body, headers=good).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=good).status_code == 200
        for path in ("/", "/health", "/ready"):
            assert httpx.get(f"{url}{path}").status_code == 200
        assert httpx.head(f"{url}/").status_code == 200


class SlowLoadingModel(MockModel):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(30)
        super().load()


def test_503_while_loading_then_ready() -> None:
    model = SlowLoadingModel()
    app = create_app(Settings(), Service(model, Settings()))
    with serving_in_thread(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/").json()["phase"] == "loading"
        not_ready = httpx.get(f"{url}/ready")
        assert not_ready.status_code == 503 and not_ready.json()["phase"] == "loading"
        refused = httpx.post(f"{url}/predict", json={"seed": 1})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert "GET /ready" in refused.json()["error"]["message"]
        model.release.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.post(f"{url}/predict", json={"seed": 1, **QUICK}).status_code == 200


def test_failed_load_is_reported_by_ready(tmp_path) -> None:
    service = Service(MockModel(tmp_path / "gone.json"), Settings())
    with serving_in_thread(create_app(Settings(), service)) as url:
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/").json()["phase"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = httpx.get(f"{url}/ready").json()
        assert body["phase"] == "failed" and "gone.json" in body["error"]
        # Liveness fails too, so a platform restarts or alerts instead of routing traffic.
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and "gone.json" in health.json()["error"]
        refused = httpx.post(f"{url}/predict", json={"seed": 1})
        assert refused.status_code == 503 and "retry-after" not in refused.headers
        assert "failed to load" in refused.json()["error"]["message"]


def test_queue_full_503_model_error_500_and_disconnect_drop() -> None:
    model = GatedModel()
    settings = Settings(max_queue_size=1, max_wait_ms=0)
    service = Service(model, settings).start()
    with serving_in_thread(create_app(settings, service)) as url:
        # A model failure is a 500 with a clear message and no internals.
        crashed = httpx.post(f"{url}/predict", json={"prompt": "boom", **QUICK})
        assert crashed.status_code == 500
        assert crashed.json()["error"]["type"] == "model_error"
        assert "Traceback" not in crashed.text and "CUDA" not in crashed.text

        model.hold()
        client = httpx.Client(base_url=url, timeout=30)
        busy = threading.Thread(target=client.post, args=("/predict",), kwargs={"json": QUICK})
        busy.start()
        assert model.entered.wait(5)
        # A client that gives up while queued is dropped before its batch starts.
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/predict", json={"prompt": "gone", **QUICK}, timeout=0.5)
        deadline = time.monotonic() + 5
        while service.engine.queue_depth:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # The queue (size 1) fills; the next request is refused at once.
        queued = threading.Thread(target=client.post, args=("/predict",), kwargs={"json": QUICK})
        queued.start()
        while service.engine.queue_depth < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = httpx.post(f"{url}/predict", json=QUICK)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "overloaded"
        model.gate.set()
        busy.join(30)
        queued.join(30)
        client.close()
        assert httpx.post(f"{url}/predict", json=QUICK).status_code == 200
    prompts = [j.prompt for call in model.calls for j in call]
    assert "gone" not in prompts and service.engine.stats.dropped_requests == 1
    service.stop()


def test_every_route_that_takes_images_gets_room_for_them() -> None:
    """A photo over MAX_BODY_BYTES (but within MAX_IMAGE_BYTES) reaches each route that takes
    images: an OpenAI edit's upload, a data: URI in a Replicate or Cog prediction's input; a
    body as large elsewhere is still refused."""
    settings = Settings(max_body_bytes=4096, max_wait_ms=0, ui=False)
    service = Service(MockModel(), settings).start()
    image = png(photo(64, 96))
    assert settings.max_body_bytes < len(image) < settings.max_image_bytes
    uri = "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    given = {"prompt": "a fox", "image": uri, "steps": 2}
    with TestClient(create_app(settings, service)) as client:
        edit = client.post(
            "/v1/images/edits",
            files={"image": ("photo.png", image, "image/png")},
            data={"prompt": "a fox", "steps": "2"},
        )
        assert edit.status_code == 200, edit.text
        for method, path in (
            ("POST", "/predict"),
            ("POST", "/v1/predictions"),
            ("POST", "/v1/models/me/fox/predictions"),
            ("POST", "/predictions"),
            ("PUT", "/predictions/fox-1"),
        ):
            body = given if path == "/predict" else {"input": given}
            answer = client.request(method, path, json=body)
            assert answer.status_code in (200, 201), (path, answer.text)
        elsewhere = client.post("/predictions/fox-1/cancel", json={"pad": "x" * len(uri)})
        assert elsewhere.status_code == 413
    service.stop()


def test_form_numbers_longer_than_any_bound_are_refused_not_crashed() -> None:
    """Python will not read an int of over 4,300 digits: such text stays text for the schema."""
    settings = Settings(max_wait_ms=0, ui=False)
    service = Service(MockModel(), settings).start()
    with TestClient(create_app(settings, service)) as client:
        for field in ("steps", "prompt_weight"):
            parts = {"prompt": (None, "x"), field: (None, "9" * 5000)}
            answer = client.post("/predict", files=parts)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["field"] == field
    service.stop()
