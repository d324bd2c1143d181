"""Replicate's API, driven by the official ``replicate`` client against the real server process.

The client only changes its ``base_url``: everything below is what a user's existing Replicate
code does, and the images must be byte for byte those of ``POST /predict``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inference.http.app import create_app
from inference.settings import Settings
from tests.receivers import Receiver, webhook_receiver
from tests.servers import inference_server, serving_in_thread
from tests.test_http import metric

replicate = pytest.importorskip("replicate")
from replicate.exceptions import ReplicateError  # noqa: E402
from replicate.helpers import FileOutput  # noqa: E402
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret  # noqa: E402

TOKEN = "test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SMALL = {"width": 64, "height": 64, "steps": 4}
#: About 2-3 s of the mock model on one core: long enough to act while it runs.
SLOW = {"width": 1024, "height": 1024, "steps": 100}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    env = {
        "AUTH_TOKEN": TOKEN,
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_RETRY_BACKOFF_S": "0.05",
        "MAX_WAIT_MS": "0",
    }
    with inference_server(env) as base:
        yield base


@pytest.fixture
def client(url: str) -> Any:
    c = replicate.Client(api_token=TOKEN, base_url=url)
    c.poll_interval = 0.05
    return c


def predict_bytes(url: str, request: dict[str, Any]) -> list[bytes]:
    body = httpx.post(f"{url}/predict", json=request, headers=AUTH, timeout=60).json()
    return [base64.b64decode(image["data"]) for image in body["images"]]


def test_run_returns_files_with_the_bytes_of_predict(url: str, client: Any) -> None:
    request = {"prompt": "a red fox", "seed": 42, "prompt_weight": 0.7, "num_outputs": 2, **SMALL}
    output = client.run("anyone/any-model", input=request)
    assert [type(o) for o in output] == [FileOutput, FileOutput]
    assert all(o.url.startswith("data:image/png;base64,") for o in output)
    assert [o.read() for o in output] == predict_bytes(url, request)


def test_run_with_a_version_reference_and_webp(url: str, client: Any) -> None:
    request = {"seed": 3, "output_format": "webp", **SMALL}
    output = client.run(f"me/model:{'0' * 64}", input=request)
    assert output[0].url.startswith("data:image/webp;base64,")
    assert [o.read() for o in output] == predict_bytes(url, request)


def test_create_wait_get_and_the_prediction_object(url: str, client: Any) -> None:
    prediction = client.models.predictions.create(model="a/b", input={"seed": 9, **SMALL})
    assert prediction.status in ("starting", "processing", "succeeded")
    assert len(prediction.id) >= 22 and prediction.id.isalnum()
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert prediction.model == "a/b" and len(prediction.version) == 64
    assert prediction.input == {"seed": 9, **SMALL}
    assert prediction.metrics["seed"] == 9 and prediction.metrics["predict_time"] > 0
    assert prediction.created_at <= prediction.started_at <= prediction.completed_at
    assert prediction.created_at.endswith("Z")
    assert prediction.urls["get"] == f"{url}/v1/predictions/{prediction.id}"
    progress = prediction.progress  # the client parses the sampler's tqdm lines in the logs
    assert (progress.current, progress.total, progress.percentage) == (4, 4, 1.0)
    assert client.predictions.get(prediction.id).output == prediction.output


def test_cancel_mid_run_stops_the_steps(url: str, client: Any) -> None:
    def counter(name: str) -> float:
        return metric(httpx.get(f"{url}/metrics", headers=AUTH).text, name)

    def steps_run() -> float:
        return counter("inference_denoising_steps_total")

    before, abandoned = steps_run(), counter("inference_abandoned_batches_total")
    prediction = client.predictions.create(version="v", input={"seed": 1, **SLOW})
    deadline = time.monotonic() + 30
    while (prediction.progress is None or prediction.progress.current < 3) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
        prediction.reload()
    prediction.cancel()
    assert prediction.status == "canceled"
    deadline = time.monotonic() + 30  # only a guard: the batch stops at its next step
    while counter("inference_abandoned_batches_total") == abandoned and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counter("inference_abandoned_batches_total") == abandoned + 1  # stopped, not hidden
    ran = steps_run() - before
    assert 3 <= ran < SLOW["steps"]
    assert client.predictions.get(prediction.id).status == "canceled"
    prediction.cancel()  # a finished prediction: returned as it is
    assert prediction.status == "canceled"


def test_the_clients_async_api(url: str, client: Any) -> None:
    async def scenario() -> None:
        output = await client.async_run("a/b", input={"seed": 6, **SMALL})
        assert [await o.aread() for o in output] == predict_bytes(url, {"seed": 6, **SMALL})
        prediction = await client.predictions.async_create(version="v", input={"seed": 1, **SLOW})
        await prediction.async_cancel()
        assert prediction.status == "canceled"
        done = await client.models.predictions.async_create(model="a/b", input=SMALL)
        await done.async_wait()
        assert done.status == "succeeded"
        page = await client.predictions.async_list()
        assert {prediction.id, done.id} <= {p.id for p in page.results}

    asyncio.run(scenario())


def test_prefer_wait_that_runs_out_says_starting_and_run_polls(client: Any) -> None:
    # Four 1024x1024 images of 100 steps: well past the 1 s wait, even on a fast machine.
    slow = {"seed": 2, **SLOW, "num_outputs": 4}
    prediction = client.predictions.create(version="v", input=slow, wait=1)
    assert prediction.status == "starting"  # as Replicate answers; run() polls on that status
    prediction.cancel()
    output = client.run("a/b", input={"seed": 2, **SLOW, "steps": 50}, wait=1)
    assert len(output[0].read()) > 100_000


def test_list_has_the_newest_first(client: Any) -> None:
    created = [client.predictions.create(version="v", input={"seed": s, **SMALL}) for s in (1, 2)]
    page = client.predictions.list()
    ids = [p.id for p in page.results]
    assert ids.index(created[1].id) < ids.index(created[0].id)
    assert page.results[0].output is None and page.results[0].urls["get"]


def test_stream_gives_logs_then_the_output_then_done(url: str, client: Any) -> None:
    events = list(client.stream("a/b", input={"seed": 5, **SMALL}))
    kinds = [e.event.value for e in events]
    assert kinds == ["logs"] * 5 + ["output", "done"], kinds
    assert events[0].data.startswith(" 25%|") and events[3].data.startswith("100%|")
    assert events[5].data.read() == predict_bytes(url, {"seed": 5, **SMALL})[0]


def test_errors_come_as_replicate_errors(url: str, client: Any) -> None:
    with pytest.raises(ReplicateError) as info:
        client.predictions.get("no-such-prediction")
    assert info.value.status == 404 and "no-such-prediction" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.run("a/b", input={"width": 1001, "seed": 1})
    assert info.value.status == 422
    assert "width must be a multiple of 8, got 1001" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.run("a/b", input={}, webhook="ftp://example.com/hook")
    assert info.value.status == 422 and "is not an http:// or https:// URL" in info.value.detail
    bad_token = replicate.Client(api_token="wrong", base_url=url)
    with pytest.raises(ReplicateError) as info:
        bad_token.predictions.list()
    assert info.value.status == 401
    malformed = httpx.post(
        f"{url}/v1/predictions", json={"input": {}}, headers={**AUTH, "prefer": "wait=soon"}
    )
    assert malformed.status_code == 422 and malformed.json()["invalid_fields"][0]["field"] == (
        "Prefer"
    )
    assert malformed.headers["content-type"] == "application/problem+json"


def test_webhooks_are_signed_as_replicate_signs_them(client: Any) -> None:
    with webhook_receiver() as receiver:
        prediction = client.predictions.create(
            version="v",
            input={"seed": 4, **SMALL},
            webhook=receiver.url,
            webhook_events_filter=["start", "completed"],
        )
        deliveries = _completed(receiver, prediction.id)
    secret = WebhookSigningSecret(key=SECRET)
    for delivery in deliveries:
        replicate.webhooks.validate(
            headers=delivery.headers, body=delivery.body.decode(), secret=secret, tolerance=60
        )
    assert [d.json["status"] for d in deliveries] == ["processing", "succeeded"]
    assert deliveries[-1].json["output"][0].startswith("data:image/png;base64,")
    tampered = deliveries[-1].body.decode().replace("succeeded", "failed")
    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(headers=deliveries[-1].headers, body=tampered, secret=secret)


def _completed(receiver: Receiver, prediction_id: str, timeout_s: float = 15) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mine = [d for d in receiver.answered() if d.json["id"] == prediction_id]
        if mine and mine[-1].json["status"] in ("succeeded", "failed", "canceled"):
            return mine
        time.sleep(0.02)
    raise TimeoutError(f"no completed webhook for {prediction_id}: {receiver.deliveries}")


def test_outputs_as_urls_served_here() -> None:
    app = create_app(Settings(predictions_output="url"))
    with serving_in_thread(app) as base:
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        client = replicate.Client(api_token="unused", base_url=base)
        output = client.run("a/b", input={"seed": 8, **SMALL})
        assert isinstance(output[0], str)  # http: stays a string; https: would be a FileOutput
        assert output[0].startswith(f"{base}/v1/predictions/") and output[0].endswith("/out-0.png")
        assert httpx.get(output[0]).content == predict_bytes(base, {"seed": 8, **SMALL})[0]


def links_in(value: Any, base: str) -> list[str]:
    """Every string in an envelope (at any depth) that is a URL of this server."""
    if isinstance(value, dict):
        return [link for item in value.values() for link in links_in(item, base)]
    if isinstance(value, list):
        return [link for item in value for link in links_in(item, base)]
    return [value] if isinstance(value, str) and value.startswith(base) else []


#: How each protocol creates a prediction that waits for its outputs, and how many links its
#: envelope carries besides one per output (served as URLs: PREDICTIONS_OUTPUT=url).
CREATIONS = {
    "replicate": ("/v1/predictions", {"prefer": "wait"}, 3),  # urls: get, cancel, stream
    "cog": ("/predictions", {}, 0),
}


@pytest.mark.parametrize("protocol", sorted(CREATIONS))
def test_every_link_an_envelope_writes_is_served(protocol: str) -> None:
    """The envelopes' links come from the paths the Replicate router is declared with; a link
    to a path no route serves would fail here (cancel is POSTed, as the clients do)."""
    path, headers, others = CREATIONS[protocol]
    with inference_server({"PREDICTIONS_OUTPUT": "url", "MAX_WAIT_MS": "0"}) as base:
        body = {"input": {"seed": 5, "num_outputs": 2, **SMALL}}
        created = httpx.post(base + path, json=body, headers=headers, timeout=60).json()
        assert created["status"] == "succeeded", created
        links = links_in(created, base)
        assert len(links) == others + 2, links  # and the two images
        for link in links:
            method = "POST" if link.endswith("/cancel") else "GET"
            answer = httpx.request(method, link, timeout=30)
            assert answer.status_code == 200, (method, link, answer.text)
