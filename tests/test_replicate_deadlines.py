"""Replicate's ``Cancel-After`` header against the real server process on a slow model.

A prediction still running at its deadline ends ``canceled``, its steps stop, and its
webhook says so as for a cancel; one that finished first is left alone; bad durations are 422s
in Replicate's shape naming the header.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inference.http.app import create_app
from inference.http.protocols.replicate.deadlines import cancel_after_s
from inference.settings import Settings
from tests.receivers import webhook_receiver
from tests.servers import inference_server, serving_in_thread

TOKEN = "test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
#: SleepyModel takes 0.05 s a step on any machine: 150 steps is 7.5 s, far past the deadlines.
LONG = {"width": 64, "height": 64, "steps": 150}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    env = {
        "AUTH_TOKEN": TOKEN,
        "MODEL": "tests.fakes:SleepyModel",
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "MAX_WAIT_MS": "0",
        "MAX_STEPS": "150",
    }
    with inference_server(env) as base:
        yield base


def create(url: str, cancel_after: str, **body: Any) -> httpx.Response:
    headers = {**AUTH, "Cancel-After": cancel_after}
    return httpx.post(f"{url}/v1/predictions", json=body, headers=headers, timeout=60)


def finished(
    url: str, prediction_id: str, timeout_s: float = 30, headers: dict[str, str] = AUTH
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        prediction = httpx.get(f"{url}/v1/predictions/{prediction_id}", headers=headers).json()
        if prediction["status"] in ("succeeded", "failed", "canceled"):
            return prediction
        time.sleep(0.05)
    raise TimeoutError(f"{prediction_id} did not finish in {timeout_s}s")


def test_a_running_prediction_is_canceled_at_its_deadline_with_its_webhook(url: str) -> None:
    with webhook_receiver() as receiver:
        created = create(
            url,
            "500ms",
            input={"seed": 1, **LONG},
            webhook=receiver.url,
            webhook_events_filter=["completed"],
        )
        assert created.status_code == 201, created.text
        prediction = finished(url, created.json()["id"])
        delivered = receiver.wait_for(1)
    assert prediction["status"] == "canceled" and prediction["output"] is None
    assert [d.json["status"] for d in delivered] == ["canceled"]
    assert delivered[0].json["id"] == prediction["id"]
    assert "1/150" in prediction["logs"] and "150/150" not in prediction["logs"]  # stopped


def test_prefer_wait_returns_when_the_deadline_cancels(url: str) -> None:
    headers = {**AUTH, "Cancel-After": "0.3s", "Prefer": "wait=60"}
    response = httpx.post(
        f"{url}/v1/models/a/b/predictions",
        json={"input": {"seed": 2, **LONG}},
        headers=headers,
        timeout=90,
    )
    assert response.status_code == 201 and response.json()["status"] == "canceled"


def test_a_prediction_done_before_its_deadline_is_left_as_it_is(url: str) -> None:
    created = create(url, "2s", input={"seed": 3, "width": 64, "height": 64, "steps": 2})
    prediction = finished(url, created.json()["id"])
    assert prediction["status"] == "succeeded"
    time.sleep(2.5)  # past the deadline: the timer fired and found it finished
    again = httpx.get(f"{url}/v1/predictions/{prediction['id']}", headers=AUTH).json()
    assert again["status"] == "succeeded" and again["output"] == prediction["output"]


def test_a_timer_ends_when_its_prediction_does() -> None:
    """A 24h deadline on a prediction that finished holds no task for the rest of the day."""
    app = create_app(Settings(model="tests.fakes:SleepyModel", max_wait_ms=0))
    with serving_in_thread(app) as base:
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        body = {"input": {"seed": 5, "width": 64, "height": 64, "steps": 20}}
        headers = {"Cancel-After": "24h"}
        created = httpx.post(f"{base}/v1/predictions", json=body, headers=headers, timeout=60)
        assert created.status_code == 201, created.text
        assert created.json()["status"] in ("starting", "processing")  # so a timer was started
        assert finished(base, created.json()["id"], headers={})["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while app.state.cancel_timers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not app.state.cancel_timers


@pytest.mark.parametrize("value", ["soon", "5 m", "-1s", "0", "0s", "25h", "1d", "1e3", "m5"])
def test_a_bad_cancel_after_is_a_422_naming_the_header(url: str, value: str) -> None:
    response = create(url, value, input={"seed": 4, "steps": 2})
    assert response.status_code == 422
    problem = response.json()
    assert problem["invalid_fields"][0]["field"] == "Cancel-After"
    detail = problem["detail"]
    assert value in detail and ("'30s'" in detail or "24h" in detail)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("45", 45), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("250ms", 0.25)],
)
def test_durations_read_as_replicate_writes_them(value: str, seconds: float) -> None:
    assert cancel_after_s(value) == pytest.approx(seconds)
