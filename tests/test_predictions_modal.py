"""Predictions across Modal containers, up to Modal's boundary.

Modal has no local emulator (tests/test_modal.py), so Modal's primitives are faked with their
contracts: a ``modal.Dict`` that takes only plain JSON data and has an atomic
``put(skip_if_exists=True)``, and spawned calls that run on a "worker container" (its own
thread, event loop and service) and hand back results or raised errors as pickles, as
``FunctionCall.get`` does. Two apps, each with its own service and ``ModalStore`` over the same
fakes, stand for two web containers: a GET may reach the one that did not take the POST.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import pickle
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.http.app import create_app
from inference.http.protocols.predictions import use_store
from inference.models.mock import MockModel
from inference.predictions import WebhookSender, modal_store, new_id
from inference.predictions.modal_store import ModalRunner, ModalStore
from inference.predictions.record import Prediction
from inference.results import GenerateResult
from inference.schema import GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel, SlowStepsModel
from tests.receivers import webhook_receiver

SMALL = {"width": 64, "height": 64, "steps": 4}
BASE = {"max_wait_ms": 0, "webhook_allowed_hosts": "127.0.0.1", "webhook_retry_backoff_s": 0.05}


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits poll the shared state every 0.5 s on Modal; tests need not wait that long."""
    monkeypatch.setattr(modal_store, "POLL_INTERVAL_S", 0.05)


class FakeDict:
    """``modal.Dict``'s contract: put(skip_if_exists=True) is atomic, and a value is stored as
    serialized bytes. The store keeps plain data in it, so this one takes only what survives a
    JSON round trip unchanged (no class instances, no tuples) and stores it as JSON."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()

    @staticmethod
    def serialize(value: Any) -> str:
        text = json.dumps(value)  # TypeError for a class instance, bytes, a set
        assert json.loads(text) == value, f"not plain JSON data: {value!r}"  # e.g. a tuple
        return text

    async def get(self, key: str) -> Any:
        raw = self.data.get(key)
        return None if raw is None else json.loads(raw)

    async def put(self, key: str, value: Any, skip_if_exists: bool = False) -> bool:
        text = self.serialize(value)
        with self.lock:
            if skip_if_exists and key in self.data:
                return False
            self.data[key] = text
            return True

    async def pop(self, key: str) -> Any:
        raw = self.data.pop(key, None)
        return None if raw is None else json.loads(raw)

    async def len(self) -> int:
        return len(self.data)

    async def values(self) -> list[Any]:
        return [json.loads(raw) for raw in list(self.data.values())]


class WorkerContainer:
    """Where spawned calls run: a thread with its own loop, service and ``ModalRunner``."""

    def __init__(self, model: MockModel, records: FakeDict, meta: FakeDict) -> None:
        settings = Settings(**BASE)
        self.service = Service(model, settings).start()
        self.webhooks = WebhookSender(settings)
        self.jobs = ModalRunner(self.service, records, meta, self.webhooks)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.webhooks.close(5)
        self.service.stop()


class FakeCalls:
    """``spawn``, ``FunctionCall.get(timeout=0)`` and ``FunctionCall.cancel`` over a worker."""

    def __init__(self, worker: WorkerContainer) -> None:
        self.worker = worker
        self.calls: dict[str, concurrent.futures.Future[Any]] = {}
        self.lost: set[str] = set()  # calls Modal gave up on (a timeout, a crashed container)

    async def spawn(self, prediction: Any, job: Any) -> str:
        prediction, job = pickle.loads(pickle.dumps((prediction, job)))  # to another process
        call_id = f"fc-{new_id()}"
        run = self.worker.jobs.run(prediction, job)
        self.calls[call_id] = asyncio.run_coroutine_threadsafe(run, self.worker.loop)
        return call_id

    async def result(self, call_id: str) -> GenerateResult | None:
        if call_id in self.lost:
            raise TimeoutError("FunctionTimeoutError: the call ran past its timeout")
        call = self.calls[call_id]
        if not call.done():
            return None
        if call.cancelled():
            raise RuntimeError("the call was cancelled")
        if (error := call.exception()) is not None:
            raise pickle.loads(pickle.dumps(error))
        return GenerateResult.model_validate(pickle.loads(pickle.dumps(call.result())))

    async def cancel(self, call_id: str) -> None:
        self.calls[call_id].cancel()


@contextmanager
def modal_deployment(model: MockModel, **settings: Any) -> Iterator[SimpleNamespace]:
    """A worker container and two web containers (``a``, ``b``) sharing the fakes."""
    records, meta = FakeDict(), FakeDict()
    worker = WorkerContainer(model, records, meta)
    calls = FakeCalls(worker)
    with ExitStack() as stack:
        stack.callback(worker.stop)
        clients = []
        for _ in range(2):
            web = Service(MockModel(), Settings(**{**BASE, **settings})).start()
            stack.callback(web.stop)
            app = create_app(web.settings, web)
            use_store(app, ModalStore(web.settings, calls, records, meta))
            clients.append(stack.enter_context(TestClient(app, raise_server_exceptions=False)))
        yield SimpleNamespace(a=clients[0], b=clients[1], worker=worker, calls=calls, meta=meta)


def poll(client: TestClient, path: str, test: Any, timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(path).json()
        if test(body):
            return body
        time.sleep(0.02)
    raise TimeoutError(f"{path}: {body}")


def test_created_on_one_container_read_on_another_with_the_engines_bytes() -> None:
    with modal_deployment(MockModel()) as modal:
        created = modal.a.post("/v1/models/a/b/predictions", json={"input": {"seed": 5, **SMALL}})
        assert created.status_code == 201
        pid = created.json()["id"]
        done = poll(modal.b, f"/v1/predictions/{pid}", lambda b: b["status"] == "succeeded")
        expected = modal.worker.service.generate(GenerateRequest(seed=5, **SMALL))
        assert base64.b64decode(done["output"][0].partition(",")[2]) == expected.images[0].data
        assert done["metrics"]["seed"] == 5 and "100%|" in done["logs"]
        waited = modal.b.post("/v1/predictions", json={"input": SMALL}, headers={"prefer": "wait"})
        assert waited.json()["status"] == "succeeded"
        listed = modal.a.get("/v1/predictions").json()["results"]
        assert [p["id"] for p in listed][-1] == pid and len(listed) == 2


def test_progress_and_cancel_across_containers_stop_the_steps() -> None:
    model = SlowStepsModel(step_s=0.02)
    with modal_deployment(model) as modal:
        pid = modal.a.post("/v1/predictions", json={"input": {"seed": 1, "steps": 100}}).json()[
            "id"
        ]
        running = poll(modal.b, f"/v1/predictions/{pid}", lambda b: "3/100" in (b["logs"] or ""))
        assert running["status"] == "processing"
        stats = modal.worker.service.engine.stats
        calls = stats.model_calls
        canceled = modal.b.post(f"/v1/predictions/{pid}/cancel").json()
        assert canceled["status"] == "canceled"
        deadline = time.monotonic() + 30  # only a guard: the batch stops at its next step
        while stats.abandoned_batches == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        # the worker's batch stopped between steps: no image came back, and no step runs now
        assert stats.abandoned_batches == 1 and stats.model_calls == calls
        ran = model.steps_run
        assert 3 <= ran < 100
        assert modal.a.get(f"/v1/predictions/{pid}").json()["status"] == "canceled"
        again = modal.a.post(f"/v1/predictions/{pid}/cancel")
        assert again.json()["status"] == "canceled"


def test_failures_from_the_job_and_from_modal() -> None:
    with webhook_receiver() as receiver, modal_deployment(GatedModel()) as modal:
        hook = {"webhook": receiver.url, "webhook_events_filter": ["completed"]}
        body = {"input": {"prompt": "boom", **SMALL}, **hook}
        failed = modal.a.post("/v1/predictions", json=body, headers={"prefer": "wait"}).json()
        assert failed["status"] == "failed" and "server log" in failed["error"]

        modal.worker.service.model.hold()  # the next call never ends: Modal times it out
        lost = modal.a.post("/v1/predictions", json={"input": SMALL, **hook}).json()["id"]
        call_id = asyncio.run(modal.meta.get(f"call/{lost}"))
        modal.calls.lost.add(call_id)
        gone = modal.b.get(f"/v1/predictions/{lost}").json()
        assert gone["status"] == "failed" and "FunctionTimeoutError" in gone["error"]
        modal.worker.service.model.gate.set()
        deliveries = receiver.wait_for(2)
    assert sorted(d.json["id"] for d in deliveries) == sorted([failed["id"], lost])
    assert {d.json["status"] for d in deliveries} == {"failed"}


def test_webhooks_come_from_the_worker_in_order() -> None:
    with webhook_receiver() as receiver, modal_deployment(SlowStepsModel(0.1)) as modal:
        body = {"input": {"seed": 2, **SMALL, "steps": 8}, "webhook": receiver.url}
        pid = modal.a.post("/v1/predictions", json=body).json()["id"]
        poll(modal.a, f"/v1/predictions/{pid}", lambda b: b["status"] == "succeeded")
        time.sleep(0.2)
        statuses = [d.json["status"] for d in receiver.answered()]
    assert statuses[0] == "processing" and statuses[-1] == "succeeded" and len(statuses) >= 3


def test_cog_put_is_idempotent_across_containers_and_the_store_is_bounded() -> None:
    with modal_deployment(GatedModel(), predictions_max_count=2, predictions_ttl_s=1) as modal:
        first = modal.a.put("/predictions/job-1", json={"input": {"seed": 1, **SMALL}})
        again = modal.b.put("/predictions/job-1", json={"input": {"seed": 1, **SMALL}})
        assert first.json()["status"] == "succeeded" and again.json() == first.json()
        modal.worker.service.model.hold()
        modal.a.post("/predictions", json={"input": SMALL}, headers={"prefer": "respond-async"})
        full = modal.b.post("/v1/predictions", json={"input": SMALL})
        assert full.status_code == 503 and "PREDICTIONS_MAX_COUNT" in full.json()["detail"]
        assert full.headers["retry-after"] == "1"
        modal.worker.service.model.gate.set()
        time.sleep(1.1)  # job-1 expires
        assert modal.b.post("/v1/predictions", json={"input": SMALL}).status_code == 201
        assert modal.a.get("/predictions/job-1").status_code == 404


def test_server_sent_events_over_the_modal_store() -> None:
    with modal_deployment(MockModel()) as modal:
        pid = modal.a.post("/v1/predictions", json={"input": {"seed": 3, **SMALL}}).json()["id"]
        with modal.b.stream("GET", f"/v1/predictions/{pid}/stream") as response:
            lines = [line for line in response.iter_lines() if line.startswith("event: ")]
    assert lines[-2:] == ["event: output", "event: done"] and "event: logs" in lines


# -- deploy.py's bindings of Modal's primitives (translation only) ---------------------------


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("modal")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODAL_CONFIG_PATH", str(tmp_path_factory.mktemp("modal") / "none.toml"))
        import deploy as module

    return module


def aio(function: Any) -> SimpleNamespace:
    return SimpleNamespace(aio=function)


def test_deploy_binds_the_dict_through_its_async_calls(deploy: Any) -> None:
    fake = FakeDict()

    async def values() -> Any:
        for value in await fake.values():
            yield value

    modal_dict = SimpleNamespace(
        get=aio(fake.get),
        put=aio(lambda k, v, skip_if_exists: fake.put(k, v, skip_if_exists)),
        pop=aio(lambda k, default: fake.pop(k)),
        len=aio(fake.len),
        values=aio(values),
    )
    shared = deploy.SharedDict(modal_dict)

    async def scenario() -> None:
        assert await shared.put("k", 1) and not await shared.put("k", 2, skip_if_exists=True)
        assert (await shared.get("k"), await shared.len(), await shared.values()) == (1, 1, [1])
        assert await shared.pop("k") == 1 and await shared.pop("k") is None

    asyncio.run(scenario())


def test_deploy_follows_calls_through_function_call(
    deploy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(MockModel(), Settings()).start()
    try:
        result = service.generate(GenerateRequest(seed=1, **SMALL))
    finally:
        service.stop()
    outcomes: dict[str, Any] = {
        "running": TimeoutError(),
        "expired": deploy.modal.exception.OutputExpiredError(),
        "done": result.model_dump(),
    }
    cancelled: list[str] = []

    async def get(call_id: str, timeout: float) -> Any:
        assert timeout == 0
        if isinstance(outcome := outcomes[call_id], BaseException):
            raise outcome
        return outcome

    def from_id(call_id: str) -> SimpleNamespace:
        async def cancel() -> None:
            cancelled.append(call_id)

        return SimpleNamespace(get=aio(lambda timeout: get(call_id, timeout)), cancel=aio(cancel))

    monkeypatch.setattr(deploy.modal.FunctionCall, "from_id", from_id)
    calls = deploy.ModalCalls()

    async def scenario() -> None:
        assert await calls.result("running") is None
        with pytest.raises(deploy.modal.exception.OutputExpiredError):
            await calls.result("expired")
        assert (await calls.result("done")).images[0].data == result.images[0].data
        await calls.cancel("done")

    asyncio.run(scenario())
    assert cancelled == ["done"]


def test_the_class_declares_the_spawned_job(deploy: Any) -> None:
    info = deploy.Model().run_prediction.info()
    assert {"generate", "run_prediction", "web"} <= set(info.method_names or [])
    assert info.gpus == [(deploy.SETTINGS.gpu.upper(), 1)]  # it runs where the engine is


def test_a_call_modal_refuses_fails_its_record() -> None:
    with modal_deployment(MockModel()) as modal:

        async def refused(prediction: Any, job: Any) -> str:
            raise ConnectionError("Modal is unreachable")

        modal.calls.spawn = refused
        answer = modal.a.post("/v1/predictions", json={"input": SMALL})
        assert answer.status_code == 500
        (record,) = modal.a.get("/v1/predictions").json()["results"]
        assert record["status"] == "failed" and "ConnectionError" in record["error"]


# -- the stored records: plain, versioned data ------------------------------------------------

RECORD_V1 = Path(__file__).with_name("data") / "prediction_record_v1.json"


def test_a_stored_v1_record_reads_back_and_is_what_this_code_writes() -> None:
    """The sample is a record as schema 1 writes it; a redeploy must keep reading it."""
    stored = json.loads(RECORD_V1.read_text(encoding="utf-8"))
    prediction = Prediction.from_dict(stored)
    assert (prediction.id, prediction.protocol, prediction.status) == (
        "k3x9q2m7v8t1w4r6y0p5s2n8zb",
        "replicate",
        "processing",
    )
    assert prediction.events == frozenset({"start", "completed"})
    assert prediction.input["seed"] == 42 and prediction.revision == 3
    assert prediction.outputs is None  # images stay in the call's result
    written = prediction.to_dict()
    assert written == json.loads(json.dumps(written))  # JSON types only
    assert {k: written[k] for k in stored} == stored  # no field of schema 1 dropped or changed


def test_a_record_without_the_optional_fields_loads_with_their_defaults() -> None:
    """A field added to ``Prediction`` later (with a default) is absent from older records."""
    stored = json.loads(RECORD_V1.read_text(encoding="utf-8"))
    minimal = {key: stored[key] for key in ("v", "id", "protocol", "input")}
    prediction = Prediction.from_dict(minimal)
    assert (prediction.status, prediction.revision, prediction.logs) == ("starting", 0, "")
    assert prediction.events == frozenset({"start", "output", "logs", "completed"})
    # Keys a newer schema 1 writer added are ignored, not fatal.
    assert Prediction.from_dict({**minimal, "added_later": 1}).id == stored["id"]


@pytest.mark.parametrize(
    ("stored", "named"),
    [
        ({"v": 2, "id": "a", "protocol": "cog", "input": {}}, "prediction record version 2"),
        ({"id": "a", "protocol": "cog", "input": {}}, "prediction record version None"),
        ({"v": 1, "id": "a"}, "lacks protocol, input"),
    ],
)
def test_a_record_this_code_cannot_read_is_refused_by_name(stored: Any, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        Prediction.from_dict(stored)


def test_a_pickled_record_from_the_previous_deployment_still_loads() -> None:
    """During a redeploy the Dicts still hold the previous code's pickled ``Prediction`` and
    its end as a tuple; the store reads both and writes plain data from then on."""
    legacy = Prediction(id="old1", protocol="cog", input={"seed": 1}, status="processing")
    ended = ("canceled", 1796000009.0, None)

    class LegacyDict:  # what modal.Dict hands back after unpickling the old values
        def __init__(self, data: dict[str, Any]) -> None:
            self.data = data

        async def get(self, key: str) -> Any:
            return self.data.get(key)

    store = ModalStore(
        Settings(**BASE),
        calls=None,  # type: ignore[arg-type]
        records=LegacyDict({"old1": legacy}),  # type: ignore[arg-type]
        meta=LegacyDict({"done/old1": ended}),  # type: ignore[arg-type]
    )
    try:
        loaded = asyncio.run(store.load("old1"))
    finally:
        store.webhooks.close(5)
    assert loaded is not None
    assert (loaded.status, loaded.completed_at) == ("canceled", 1796000009.0)
