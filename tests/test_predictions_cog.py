"""Cog's HTTP API: the same request JSON to Cog's own prediction server (running predict.py)
and to ours must give envelopes with the same keys, statuses and output bytes.

Cog's server is the pinned ``cog`` package's (coglet), started as tests/test_cog.py starts it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Collection, Iterator
from typing import Any

import httpx
import pytest

from tests.receivers import Delivery, Receiver, webhook_receiver
from tests.servers import inference_server

pytest.importorskip("cog._inspector", reason="the cog extra is not installed")
from tests.test_cog import CogServer, _cog_folder

SMALL = {"width": 64, "height": 64, "steps": 4}
SLOW = {"width": 1024, "height": 1024, "steps": 100}
TERMINAL = frozenset({"succeeded", "failed", "canceled"})


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Cog's server and ours, side by side, both serving the mock model."""
    cog = CogServer(_cog_folder(tmp_path_factory.mktemp("cog")), COG_MAX_CONCURRENCY="8")
    try:
        with inference_server({"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "MAX_WAIT_MS": "0"}) as ours:
            cog.wait_for(("READY",))
            yield {"cog": cog.url, "ours": ours}
    finally:
        cog.stop()


def both(servers: dict[str, str], method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    return {
        name: httpx.request(method, f"{url}{path}", timeout=60, **kwargs)
        for name, url in servers.items()
    }


def images(body: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(uri.partition(",")[2]) for uri in body["output"]]


def test_synchronous_prediction(servers: dict[str, str]) -> None:
    request = {"input": {"prompt": "a red fox", "seed": 42, "num_outputs": 2, **SMALL}}
    answers = both(servers, "POST", "/predictions", json=request)
    cog, ours = (answers[n].json() for n in ("cog", "ours"))
    assert answers["cog"].status_code == answers["ours"].status_code == 200
    assert sorted(ours) == sorted(cog) == ["id", "logs", "metrics", "output", "status"]
    assert ours["status"] == cog["status"] == "succeeded"
    assert images(ours) == images(cog)
    assert sorted(ours["metrics"]) == sorted(cog["metrics"])
    assert ours["output"][0].partition(",")[0] == cog["output"][0].partition(",")[0]


def test_respond_async_and_idempotent_put(servers: dict[str, str]) -> None:
    request = {"input": {"seed": 7, **SMALL}}
    answers = both(
        servers, "POST", "/predictions", json=request, headers={"prefer": "respond-async"}
    )
    assert answers["cog"].status_code == answers["ours"].status_code == 202
    assert answers["cog"].json().keys() == answers["ours"].json().keys() == {"id", "status"}
    assert answers["ours"].json()["status"] == answers["cog"].json()["status"] == "starting"

    first = both(servers, "PUT", "/predictions/fixed-id-1", json=request)
    again = both(servers, "PUT", "/predictions/fixed-id-1", json=request)
    for answers in (first, again):
        cog, ours = answers["cog"].json(), answers["ours"].json()
        assert sorted(ours) == sorted(cog) and ours["id"] == cog["id"] == "fixed-id-1"
        assert ours["status"] == cog["status"] == "succeeded"
        assert images(ours) == images(cog)
    # Ours keeps the prediction, so a repeated PUT is the very same one, not a re-run.
    assert again["ours"].json() == first["ours"].json()

    mismatch = both(servers, "PUT", "/predictions/fixed-id-2", json={"id": "other", **request})
    for answer in mismatch.values():
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "id"]


def test_invalid_input_is_422_naming_the_field(servers: dict[str, str]) -> None:
    answers = both(servers, "POST", "/predictions", json={"input": {"seed": "forty-two"}})
    for answer in answers.values():
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "input", "seed"]
    filters = both(
        servers, "POST", "/predictions", json={"input": {}, "webhook_events_filter": ["bogus"]}
    )
    assert [a.status_code for a in filters.values()] == [422, 422]


def _deliveries(
    receiver: Receiver, prediction_id: str, start: bool, timeout_s: float = 60
) -> list[Delivery]:
    """The prediction's webhooks once its final one (and, with ``start``, a "processing" one)
    arrived. coglet sends them concurrently, so they may arrive out of order: a "processing"
    update after "succeeded" was seen under load."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mine = [d for d in receiver.answered() if d.json["id"] == prediction_id]
        statuses = {d.json["status"] for d in mine}
        if statuses & TERMINAL and (not start or "processing" in statuses):
            return mine
        time.sleep(0.05)
    raise TimeoutError(f"no final webhook for {prediction_id}: {receiver.deliveries}")


def _first(deliveries: list[Delivery], statuses: Collection[str]) -> Delivery:
    return next(d for d in deliveries if d.json["status"] in statuses)


def test_webhooks_carry_the_same_envelopes(servers: dict[str, str]) -> None:
    with webhook_receiver() as receiver:
        for name, url in servers.items():
            for filtered in (None, ["completed"]):
                body: dict[str, Any] = {
                    "id": f"hook-{name}-{bool(filtered)}",
                    "input": {"seed": 3, **SMALL},
                    "webhook": receiver.url,
                }
                if filtered:
                    body["webhook_events_filter"] = filtered
                answer = httpx.post(
                    f"{url}/predictions", json=body, headers={"prefer": "respond-async"}
                )
                assert answer.status_code == 202, answer.text
        runs = {
            (name, filtered): _deliveries(receiver, f"hook-{name}-{filtered}", not filtered)
            for name in servers
            for filtered in (False, True)
        }
    for filtered in (False, True):
        cog, ours = (
            _first(runs["cog", filtered], TERMINAL),
            _first(runs["ours", filtered], TERMINAL),
        )
        assert sorted(ours.json) == sorted(cog.json)
        assert ours.json["status"] == cog.json["status"] == "succeeded"
        assert images(ours.json) == images(cog.json)
    # Every event: the start is sent as "processing" by both; filtered: the final one alone.
    cog_start = _first(runs["cog", False], {"processing"})
    assert sorted(cog_start.json) == sorted(_first(runs["ours", False], {"processing"}).json)
    assert len(runs["cog", True]) == len(runs["ours", True]) == 1


def test_cancel_a_running_prediction(servers: dict[str, str]) -> None:
    with webhook_receiver() as receiver:
        for name, url in servers.items():
            body = {"input": {"seed": 1, **SLOW}, "webhook": receiver.url}
            answer = httpx.put(
                f"{url}/predictions/cancel-{name}", json=body, headers={"prefer": "respond-async"}
            )
            assert answer.status_code == 202
        for name, url in servers.items():
            deadline = time.monotonic() + 20  # running: its start webhook has arrived
            while not any(d.json["id"] == f"cancel-{name}" for d in receiver.answered()):
                assert time.monotonic() < deadline, "no start webhook"
                time.sleep(0.02)
            assert httpx.post(f"{url}/predictions/cancel-{name}/cancel").status_code == 200
        final = {
            name: _first(_deliveries(receiver, f"cancel-{name}", False), TERMINAL).json
            for name in servers
        }
    assert final["ours"]["status"] == final["cog"]["status"] == "canceled"
    assert sorted(final["ours"]) == sorted(final["cog"])


def test_unknown_prediction_and_health_check(servers: dict[str, str]) -> None:
    answers = both(servers, "POST", "/predictions/no-such-id/cancel")
    assert [a.status_code for a in answers.values()] == [404, 404]
    health = {name: answer.json() for name, answer in both(servers, "GET", "/health-check").items()}
    assert health["ours"]["status"] == health["cog"]["status"] == "READY"
    assert set(health["ours"]) <= set(health["cog"])
    assert set(health["ours"]["setup"]) <= set(health["cog"]["setup"])


def test_a_rule_cog_cannot_express_is_422_here(servers: dict[str, str]) -> None:
    """Cog's server runs the prediction and fails it; ours refuses it at creation (422)."""
    answers = both(servers, "POST", "/predictions", json={"input": {"width": 100}})
    assert answers["cog"].json()["status"] == "failed"
    assert answers["ours"].status_code == 422
    assert "width must be a multiple of 8, got 100" in answers["ours"].json()["detail"][0]["msg"]
