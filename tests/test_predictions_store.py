"""The in-process prediction store behind both protocols: bounds, TTL, cancel, shutdown, SSE.

Apps run in-process around a service the test holds (``TestClient``, or uvicorn in a thread
where a real HTTP client streams), so the tests can count the steps the model really ran.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from inference.http.app import create_app
from inference.models.mock import MockModel
from inference.predictions import LocalStore, Prediction, new_id
from inference.predictions.record import progress_line
from inference.predictions.store import SHUTDOWN_ERROR
from inference.schema import GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel, SlowStepsModel
from tests.receivers import webhook_receiver
from tests.servers import serving_in_thread

SMALL = {"width": 64, "height": 64, "steps": 4}
HOOKS = {"webhook_allowed_hosts": "127.0.0.1", "webhook_retry_backoff_s": 0.05}


@contextmanager
def served(model: MockModel, **settings: Any) -> Iterator[tuple[TestClient, Service]]:
    service = Service(model, Settings(**{"max_wait_ms": 0, **settings})).start()
    try:
        with TestClient(create_app(service.settings, service)) as client:
            yield client, service
    finally:
        service.stop()


def wait_for(client: TestClient, prediction_id: str, test: Any, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/predictions/{prediction_id}").json()
        if test(body):
            return body
        time.sleep(0.01)
    raise TimeoutError(f"prediction {prediction_id} never got there: {body}")


def steps_logged(body: dict[str, Any]) -> int:
    return sum("it/s]" in line for line in (body["logs"] or "").splitlines())


def test_cancel_mid_run_stops_between_steps_and_frees_the_engine() -> None:
    model = SlowStepsModel(step_s=0.02)
    with served(model) as (client, service):
        created = client.post("/v1/predictions", json={"input": {"seed": 1, "steps": 100}})
        assert created.status_code == 201 and created.json()["status"] == "starting"
        pid = created.json()["id"]
        running = wait_for(client, pid, lambda b: steps_logged(b) >= 3)
        assert running["status"] == "processing" and running["started_at"]
        canceled = client.post(f"/v1/predictions/{pid}/cancel").json()
        assert canceled["status"] == "canceled" and canceled["completed_at"]
        time.sleep(0.2)
        ran = model.steps_run
        assert 3 <= ran < 100
        time.sleep(0.2)
        assert model.steps_run == ran  # the batch stopped
        assert service.engine.stats.abandoned_batches == 1
        again = client.post(f"/v1/predictions/{pid}/cancel")  # finished: answered as it is
        assert again.status_code == 200 and again.json() == canceled
        model.step_s = 0
        after = client.post("/v1/predictions", json={"input": SMALL}, headers={"prefer": "wait"})
        assert after.json()["status"] == "succeeded"  # the engine serves the next one


class HeldSlowModel(SlowStepsModel):
    """Slow steps, and a call that waits for ``gate``: requests queued meanwhile batch up."""

    def __init__(self, step_s: float) -> None:
        super().__init__(step_s)
        self.gate = threading.Event()
        self.gate.set()

    def generate(self, jobs: Any, progress: Any = None) -> Any:
        self.gate.wait(timeout=10)
        return super().generate(jobs, progress)


def test_cancelling_one_prediction_leaves_its_batch_companion_alone() -> None:
    model = HeldSlowModel(step_s=0.02)
    with served(model, max_batch_size=2) as (client, _):
        model.gate.clear()
        blocker = {"input": {**SMALL, "width": 128, "steps": 1}}
        client.post("/predictions", json=blocker, headers={"prefer": "respond-async"})
        time.sleep(0.1)  # that one holds the engine while the two below queue up
        ids = [
            client.post(
                "/predictions",
                json={"input": {"seed": s, "steps": 30, "width": 64, "height": 64}},
                headers={"prefer": "respond-async"},
            ).json()["id"]
            for s in (1, 2)
        ]
        model.gate.set()
        wait_for(client, ids[1], lambda b: steps_logged(b) >= 3)
        client.post(f"/predictions/{ids[1]}/cancel")
        kept = wait_for(client, ids[0], lambda b: b["status"] == "succeeded")
        assert kept["metrics"]["batch_size"] == 2 and steps_logged(kept) == 30
        solo = Service(MockModel(), Settings()).start()
        try:
            expected = solo.generate(GenerateRequest(seed=1, steps=30, width=64, height=64))
        finally:
            solo.stop()
        assert base64.b64decode(kept["output"][0].partition(",")[2]) == expected.images[0].data
        assert client.get(f"/predictions/{ids[1]}").json()["status"] == "canceled"


def test_store_bounds_by_count_with_retry_after_and_ttl() -> None:
    model = GatedModel()
    with served(model, predictions_max_count=2, predictions_ttl_s=0.3) as (client, _):
        model.hold()
        first = client.post("/v1/predictions", json={"input": SMALL}).json()["id"]
        client.post("/predictions", json={"input": SMALL}, headers={"prefer": "respond-async"})
        full = client.post("/v1/predictions", json={"input": SMALL})
        assert full.status_code == 503 and full.headers["retry-after"] == "5"
        assert "PREDICTIONS_MAX_COUNT" in full.json()["detail"]
        cog_full = client.post("/predictions", json={"input": SMALL})
        assert cog_full.status_code == 503 and "PREDICTIONS_MAX_COUNT" in cog_full.json()["detail"]
        model.gate.set()
        wait_for(client, first, lambda b: b["status"] == "succeeded")
        time.sleep(0.05)
        still_full = client.post("/v1/predictions", json={"input": SMALL})
        assert still_full.status_code == 503 and still_full.headers["retry-after"] == "1"
        time.sleep(0.35)  # both finished ones expire
        assert client.get(f"/v1/predictions/{first}").status_code == 404
        assert client.post("/v1/predictions", json={"input": SMALL}).status_code == 201


def test_store_bounds_by_bytes() -> None:
    # 64x64 images reserve 16 kB each while running; the bound holds two of them, not three.
    with served(GatedModel(), predictions_max_bytes=1_000_000) as (client, _):
        big = {"width": 256, "height": 256, "steps": 2, "num_outputs": 4}  # ~0.8 MB reserved
        client.app.state.service.model.hold()
        assert client.post("/v1/predictions", json={"input": big}).status_code == 201
        refused = client.post("/v1/predictions", json={"input": big})
        assert refused.status_code == 503 and "PREDICTIONS_MAX_BYTES" in refused.json()["detail"]
        too_big = client.post("/v1/predictions", json={"input": {**big, "width": 1024}})
        assert too_big.status_code == 422
        assert too_big.json()["invalid_fields"][0]["field"] == "num_outputs"
        client.app.state.service.model.gate.set()


def test_a_full_engine_queue_makes_predictions_wait_not_fail() -> None:
    model = GatedModel()
    with served(model, max_queue_size=2) as (client, _):
        model.hold()
        ids = [
            client.post("/v1/predictions", json={"input": {"seed": s, **SMALL}}).json()["id"]
            for s in range(5)
        ]
        time.sleep(0.2)
        model.gate.set()
        for pid in ids:
            ended = wait_for(client, pid, lambda b: b["completed_at"] is not None)
            assert ended["status"] == "succeeded", ended["error"]


def test_a_failing_model_fails_the_prediction_with_a_clear_error() -> None:
    with served(GatedModel()) as (client, _):
        body = client.post(
            "/v1/predictions",
            json={"input": {"prompt": "boom", **SMALL}},
            headers={"prefer": "wait"},
        ).json()
        assert body["status"] == "failed" and "server log" in body["error"]
        assert "CUDA" not in body["error"]
        cog = client.post("/predictions", json={"input": {"prompt": "boom", **SMALL}}).json()
        assert cog["status"] == "failed" and "output" not in cog


def test_shutdown_fails_unfinished_predictions_and_fires_their_webhooks() -> None:
    model = SlowStepsModel(step_s=0.05)
    with webhook_receiver() as receiver:
        with served(model, max_queue_size=2, **HOOKS) as (client, _):
            body = {
                "input": {"seed": 1, "steps": 100, "width": 64, "height": 64},
                "webhook": receiver.url,
                "webhook_events_filter": ["completed"],
            }
            ids = [client.post("/v1/predictions", json=body).json()["id"] for _ in range(3)]
            wait_for(client, ids[0], lambda b: steps_logged(b) >= 1)
        deliveries = receiver.wait_for(3)
    assert sorted(d.json["id"] for d in deliveries) == sorted(ids)
    assert {d.json["status"] for d in deliveries} == {"failed"}
    assert {d.json["error"] for d in deliveries} == {SHUTDOWN_ERROR}
    assert model.steps_run < 100


def test_sse_stream_consumed_by_httpx() -> None:
    service = Service(SlowStepsModel(step_s=0.01), Settings(max_wait_ms=0)).start()
    try:
        with serving_in_thread(create_app(service.settings, service)) as url:
            pid = httpx.post(f"{url}/v1/predictions", json={"input": {"seed": 3, **SMALL}}).json()
            events = _events(f"{url}/v1/predictions/{pid['id']}/stream")
            kinds = [event for event, _ in events]
            assert kinds == ["logs"] * 5 + ["output", "done"], events
            assert [data.split("|")[0] for _, data in events[:4]] == [
                " 25%",
                " 50%",
                " 75%",
                "100%",
            ]
            assert events[-1] == ("done", "{}")
            image = base64.b64decode(events[5][1].partition(",")[2])
            assert image == service.generate(GenerateRequest(seed=3, **SMALL)).images[0].data

            slow = {"seed": 4, "steps": 100, "width": 64, "height": 64}
            pid = httpx.post(f"{url}/v1/predictions", json={"input": slow}).json()["id"]
            with httpx.stream("GET", f"{url}/v1/predictions/{pid}/stream", timeout=20) as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("event: logs")
                httpx.post(f"{url}/v1/predictions/{pid}/cancel")
                tail = list(lines)
            assert "event: done" in tail and 'data: {"reason": "canceled"}' in tail
            assert httpx.get(f"{url}/v1/predictions/nope/stream").status_code == 404
    finally:
        service.stop()


def _events(url: str) -> list[tuple[str, str]]:
    events, event = [], None
    with httpx.stream("GET", url, timeout=20) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event:
                events.append((event, line.removeprefix("data: ")))
    return events


def test_every_predictions_route_needs_the_token_when_set() -> None:
    with served(MockModel(), auth_token="s3cret") as (client, _):
        routes = [
            ("POST", "/v1/predictions"),
            ("POST", "/v1/models/a/b/predictions"),
            ("GET", "/v1/predictions"),
            ("GET", "/v1/predictions/x"),
            ("POST", "/v1/predictions/x/cancel"),
            ("GET", "/v1/predictions/x/stream"),
            ("GET", "/v1/predictions/x/output/out-0.png"),
            ("GET", "/v1/models/a/b/versions/v"),
            ("POST", "/predictions"),
            ("PUT", "/predictions/x"),
            ("GET", "/predictions/x"),
            ("POST", "/predictions/x/cancel"),
        ]
        for method, path in routes:
            answer = client.request(method, path, json={"input": {}})
            assert answer.status_code == 401, (method, path)
        replicate_shape = client.get("/v1/predictions").json()
        assert replicate_shape["status"] == 401 and replicate_shape["title"] == "Unauthorized"
        assert "detail" in client.get("/predictions/x").json()
        assert client.get("/health-check").status_code == 200  # a probe, like /health
        token = {"authorization": "Bearer s3cret"}
        assert client.get("/v1/predictions", headers=token).status_code == 200


def test_ids_are_unguessable_and_client_ids_are_checked() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 26 and i.isalnum() for i in ids)
    with served(MockModel()) as (client, _):
        bad = client.put("/predictions/bad id!", json={"input": SMALL})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "id"]


def test_progress_lines_are_what_the_replicate_client_parses() -> None:
    replicate_prediction = pytest.importorskip("replicate.prediction")
    line = progress_line(9, 20, 1.5)
    parsed = replicate_prediction.Prediction.Progress.parse(f"loading\n{line}\n")
    assert (parsed.current, parsed.total, parsed.percentage) == (9, 20, 0.45)


def test_unknown_inputs_are_dropped_and_said_so_in_the_logs() -> None:
    with served(MockModel()) as (client, _):
        body = client.post(
            "/v1/predictions", json={"input": {"stepz": 4, **SMALL}}, headers={"prefer": "wait"}
        ).json()
        assert body["status"] == "succeeded"
        assert "ignored inputs this model does not have: stepz" in body["logs"]


def test_store_used_directly_lists_newest_first_with_a_cursor(service: Service) -> None:
    async def scenario() -> None:
        store = LocalStore(service, service.settings)
        made = []
        for seed in range(3):
            prediction = Prediction(id=new_id(), protocol="replicate", input={"seed": seed})
            made.append(await store.create(prediction, service.job({"seed": seed, **SMALL})))
        first = await store.list(None, 2)
        assert [p.id for p in first] == [made[2].id, made[1].id]
        rest = await store.list((first[-1].created_at, first[-1].id), 2)
        assert [p.id for p in rest] == [made[0].id]
        assert (await store.wait(made[0].id, 10)).status == "succeeded"
        await store.close()

    asyncio.run(scenario())


def test_list_pages_through_the_http_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.http.protocols.replicate import routes as replicate

    monkeypatch.setattr(replicate, "PAGE_SIZE", 2)
    with served(MockModel()) as (client, _):
        ids = [client.post("/v1/predictions", json={"input": SMALL}).json()["id"] for _ in range(3)]
        page = client.get("/v1/predictions").json()
        assert [p["id"] for p in page["results"]] == ids[:0:-1] and page["next"]
        rest = client.get(page["next"]).json()
        assert [p["id"] for p in rest["results"]] == ids[:1] and rest["next"] is None
        bad = client.get("/v1/predictions", params={"cursor": "%%%"})
        assert bad.status_code == 422 and json.loads(bad.text)["invalid_fields"][0]["field"] == (
            "cursor"
        )


def test_public_url_is_the_base_of_every_url() -> None:
    public = "https://me-app.hf.space"
    with served(MockModel(), public_url=public, predictions_output="url") as (client, _):
        body = client.post(
            "/v1/predictions", json={"input": SMALL}, headers={"prefer": "wait"}
        ).json()
        assert body["urls"]["get"] == f"{public}/v1/predictions/{body['id']}"
        assert body["output"] == [f"{public}/v1/predictions/{body['id']}/output/out-0.png"]
        served_bytes = client.get(f"/v1/predictions/{body['id']}/output/out-0.png")
        assert served_bytes.headers["content-type"] == "image/png"
        assert client.get(f"/v1/predictions/{body['id']}/output/out-9.png").status_code == 404
        cog = client.post("/predictions", json={"input": SMALL}).json()
        assert cog["output"][0].startswith(f"{public}/v1/predictions/{cog['id']}/output/")
