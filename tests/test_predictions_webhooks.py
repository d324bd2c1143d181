"""Webhooks: which targets are refused, order, filters, signatures, retries, never blocking.

A receiver on 127.0.0.1 (allowed by WEBHOOK_ALLOWED_HOSTS, as a deployer would allow an
internal host) records every delivery and can answer 500, hang or reset the connection.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference import net
from inference.errors import InvalidRequest
from inference.hosts import HostList
from inference.http.app import create_app
from inference.models.mock import MockModel
from inference.predictions.webhooks import check_target
from inference.service import Service
from inference.settings import Settings
from tests.fakes import SlowStepsModel
from tests.receivers import Receiver, webhook_receiver

SMALL = {"width": 64, "height": 64, "steps": 4}
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
FAST_RETRIES = {
    "webhook_allowed_hosts": "127.0.0.1",
    "webhook_retry_backoff_s": 0.05,
    "webhook_timeout_s": 0.5,
    "webhook_max_attempts": 3,
}


@contextmanager
def served(model: Any = None, **settings: Any) -> Iterator[TestClient]:
    service = Service(model or MockModel(), Settings(max_wait_ms=0, **settings)).start()
    try:
        with TestClient(create_app(service.settings, service)) as client:
            yield client
    finally:
        service.stop()


def create(client: TestClient, receiver: Receiver, events: list[str] | None = None, **inp: Any):
    body: dict[str, Any] = {"input": {**SMALL, **inp}, "webhook": receiver.url}
    if events is not None:
        body["webhook_events_filter"] = events
    answer = client.post("/v1/predictions", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


# -- targets ------------------------------------------------------------------------------


def fake_dns(table: dict[str, list[str]]) -> net.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("ftp://example.com/hook", "is not an http:// or https:// URL"),
        ("not a url", "holds a space or control character"),
        ("http://[::1/hook", "is not a valid URL"),
        ("http://example.com:99999/hook", "has port 99999, outside 1-65535"),
        ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
        ("http://[::1]/hook", "::1 is a loopback address"),
        ("http://[::ffff:10.0.0.1]/hook", "IPv4-mapped (10.0.0.1: private) address"),
        ("http://[2002:7f00:1::]/hook", "6to4 (127.0.0.1: loopback) address"),
        ("http://[64:ff9b::7f00:1]/hook", "NAT64 (127.0.0.1: loopback) address"),
        ("http://10.1.2.3/hook", "a private address"),
        ("http://192.168.1.1/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://0.0.0.0/hook", "an unspecified address"),
        ("http://100.64.0.1/hook", "a shared (100.64.0.0/10) address"),
        ("https://internal.test/hook", "resolves to 10.0.0.7, a private address"),
        ("https://split.test/hook", "resolves to 192.168.0.2, a private address"),
        ("https://nowhere.test/hook", "cannot resolve host 'nowhere.test'"),
    ],
)
def test_refused_targets_name_the_field_and_why(url: str, named: str) -> None:
    dns = fake_dns({"internal.test": ["10.0.0.7"], "split.test": ["8.8.8.8", "192.168.0.2"]})
    with pytest.raises(InvalidRequest) as info:
        asyncio.run(check_target(url, Settings(), resolver=dns))
    assert info.value.field == "webhook" and named in info.value.message
    assert "WEBHOOK_ALLOWED_HOSTS" in info.value.message or "address" not in named


def test_public_and_allowed_targets_pass() -> None:
    dns = fake_dns(
        {
            "hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"],
            "receiver.internal": ["10.0.0.9"],
        }
    )
    asyncio.run(check_target("https://hooks.example.com/x", Settings(), resolver=dns))
    allowed = Settings(webhook_allowed_hosts="receiver.internal")
    asyncio.run(check_target("http://receiver.internal/x", allowed, resolver=dns))
    with pytest.raises(InvalidRequest, match=r"10\.0\.0\.9, a private address"):
        asyncio.run(check_target("http://receiver.internal/x", Settings(), resolver=dns))


def test_localhost_is_refused_after_dns_resolution() -> None:
    with served() as client:
        answer = client.post("/v1/predictions", json={"input": {}, "webhook": "http://localhost/h"})
        assert answer.status_code == 422
        assert "'localhost'" not in answer.text and "localhost resolves to" in answer.text
        cog = client.post("/predictions", json={"input": {}, "webhook": "http://localhost/h"})
        assert cog.status_code == 422 and cog.json()["detail"][0]["loc"] == ["body", "webhook"]


def test_a_name_that_re_resolves_to_a_private_address_is_not_called(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    monkeypatch.setattr(net, "system_resolver", rebinding)
    with webhook_receiver() as receiver, served(**FAST_RETRIES) as client:
        port = receiver.url.split(":")[2].split("/")[0]
        body = {"input": SMALL, "webhook": f"http://rebind.test:{port}/hook"}
        body["webhook_events_filter"] = ["completed"]
        assert (
            client.post("/v1/predictions", json=body, headers={"prefer": "wait"}).json()["status"]
            == "succeeded"
        )
        time.sleep(0.3)
        assert receiver.deliveries == []
    assert "resolves to 127.0.0.1, a loopback address" in caplog.text


def test_a_delivery_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection is pinned to the vetted address, with the name in the Host header."""
    monkeypatch.setattr(net, "system_resolver", fake_dns({"hooks.test": ["127.0.0.1"]}))
    with webhook_receiver() as receiver, served(webhook_allowed_hosts="hooks.test") as client:
        port = receiver.url.split(":")[2].split("/")[0]
        body = {"input": SMALL, "webhook": f"http://hooks.test:{port}/hook"}
        client.post("/v1/predictions", json={**body, "webhook_events_filter": ["completed"]})
        (delivery,) = receiver.wait_for(1)
    assert delivery.headers["host"] == f"hooks.test:{port}"


# -- deliveries ---------------------------------------------------------------------------


def test_order_filters_and_one_delivery_per_event() -> None:
    model = SlowStepsModel(step_s=0.15)  # steps far enough apart for throttled logs events
    with webhook_receiver() as receiver, served(model, **FAST_RETRIES) as client:
        every = create(client, receiver, None, seed=1)
        # Distinct seeds: identical requests would share one computation (the result cache),
        # and only the computing one hears the steps.
        filtered = {
            name: create(client, receiver, [name], seed=2 + i)
            for i, name in enumerate(("start", "output", "logs", "completed"))
        }
        for pid in [every, *filtered.values()]:
            wait_done(client, pid)
        # Deliveries trail completion: wait for each prediction's last one
        last = {every: "succeeded", filtered["start"]: "processing"}
        last |= {filtered[n]: "succeeded" for n in ("output", "completed")}
        last[filtered["logs"]] = "processing"
        wait_until(
            lambda: all(
                any(d.json["id"] == pid and d.json["status"] == status for d in receiver.answered())
                for pid, status in last.items()
            ),
            "every prediction's last webhook",
        )
        answered = [d.json for d in receiver.answered()]
    by_id = {pid: [d for d in answered if d["id"] == pid] for pid in [every, *filtered.values()]}
    statuses = [d["status"] for d in by_id[every]]
    assert statuses[0] == "processing" and statuses[-1] == "succeeded"
    assert statuses.count("succeeded") == 1 and len(statuses) >= 3  # start, logs..., completed
    logs_seen = [d["logs"].count("it/s]") for d in by_id[every]]
    assert logs_seen == sorted(logs_seen)  # in order: each snapshot newer than the last
    assert [d["status"] for d in by_id[filtered["start"]]] == ["processing"]
    assert [d["status"] for d in by_id[filtered["completed"]]] == ["succeeded"]
    assert [d["status"] for d in by_id[filtered["output"]]] == ["succeeded"]
    assert by_id[filtered["output"]][0]["output"]
    assert {d["status"] for d in by_id[filtered["logs"]]} == {"processing"}
    assert 1 <= len(by_id[filtered["logs"]]) < SMALL["steps"] + 1  # throttled, not per step


def wait_until(test: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Poll ``test`` until it holds; the deadline only guards against a hang."""
    deadline = time.monotonic() + timeout_s
    while not test():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(0.01)


def wait_done(client: TestClient, pid: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/predictions/{pid}").json()
        if body["completed_at"]:
            return body
        time.sleep(0.01)
    raise TimeoutError(pid)


def test_signed_with_the_secret_and_unsigned_without() -> None:
    replicate_webhook = pytest.importorskip("replicate.webhook")
    with webhook_receiver() as receiver:
        with served(webhook_secret=SECRET, **FAST_RETRIES) as client:
            create(client, receiver, ["completed"], seed=1)
            (signed,) = receiver.wait_for(1)
        with served(**FAST_RETRIES) as client:
            create(client, receiver, ["completed"], seed=1)
            unsigned = receiver.wait_for(2)[1]
    secret = replicate_webhook.WebhookSigningSecret(key=SECRET)
    replicate_webhook.Webhooks.validate(
        headers=signed.headers, body=signed.body.decode(), secret=secret, tolerance=30
    )
    assert signed.headers["webhook-id"].startswith("msg_")
    assert "webhook-signature" not in unsigned.headers and unsigned.headers["webhook-id"]


@pytest.mark.parametrize("failure", ["500", "hang", "reset"])
def test_completed_is_retried_with_backoff_then_delivered(
    failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.predictions import webhooks

    waits: list[float] = []

    async def recorded_sleep(delay: float) -> None:
        waits.append(delay)
        await asyncio.sleep(delay)

    # The sender's own asyncio, with its sleeps recorded: the backoff it chose, not a wall time
    spy = SimpleNamespace(**{**vars(asyncio), "sleep": recorded_sleep})
    monkeypatch.setattr(webhooks, "asyncio", spy)
    with webhook_receiver() as receiver, served(**FAST_RETRIES) as client:
        receiver.plan = [failure, failure]
        receiver.hang_s = 1.0
        pid = create(client, receiver, ["completed"], seed=1)
        (delivered,) = receiver.wait_for(1)
        attempts = [d for d in receiver.deliveries if d.json["id"] == pid]
    assert [a.answered for a in attempts] == [failure, failure, "ok"]
    assert waits == [0.05, 0.1]  # backoff doubles: WEBHOOK_RETRY_BACKOFF_S, then twice that
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    # The receiver stamps an attempt before answering it, so each gap holds the whole wait:
    # lower bounds that a slow machine only makes easier to meet
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1
    assert delivered.json["status"] == "succeeded"


def test_retries_are_bounded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with webhook_receiver() as receiver, served(**FAST_RETRIES) as client:
        receiver.plan = ["500"] * 10
        create(client, receiver, ["start", "completed"], seed=1)
        # One prediction's webhooks go out in order: once the sender gives up on "completed",
        # "start" is long done and nothing more can come
        wait_until(lambda: "gave up on webhook completed" in caplog.text, "the sender to give up")
        answered = [d.answered for d in receiver.deliveries]
    assert answered == ["500"] * 4  # start: one try; completed: WEBHOOK_MAX_ATTEMPTS=3
    assert "gave up on webhook completed" in caplog.text
    assert caplog.text.count("answered 500") == 4


def test_a_hanging_receiver_never_delays_inference() -> None:
    # Every delivery hangs until released, longer than any wait below: inference that waited
    # for a webhook could not finish before the release
    settings = {**FAST_RETRIES, "webhook_timeout_s": 120}
    with webhook_receiver() as receiver, served(**settings) as c:
        receiver.plan, receiver.hang_s = ["hang"] * 20, 120
        ids = [create(c, receiver, None, seed=s) for s in range(3)]
        for pid in ids:
            assert wait_done(c, pid)["status"] == "succeeded"
        assert not receiver.answered() and not receiver.release.is_set()
        receiver.wait_for(1, behaviour="hang")  # the webhooks did go out, and hang
        receiver.plan = []
        receiver.release.set()


def test_the_queue_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = {**FAST_RETRIES, "webhook_queue_size": 1, "webhook_timeout_s": 2}
    with webhook_receiver() as receiver, served(**settings) as client:
        receiver.plan, receiver.hang_s = ["hang"] * 20, 1.0
        for seed in range(4):
            create(client, receiver, ["completed"], seed=seed)
        wait_until(lambda: "deliveries queued (WEBHOOK_QUEUE_SIZE)" in caplog.text, "a refusal")
        receiver.plan = []
        receiver.release.set()
    assert "deliveries queued (WEBHOOK_QUEUE_SIZE)" in caplog.text


def test_the_queue_is_bounded_in_bytes_until_each_delivery_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each body holds every output: bytes, not a count, bound the memory. A hanging delivery
    keeps its bytes; once it ends they are free for the next."""
    caplog.set_level(logging.WARNING)
    with webhook_receiver() as receiver:
        with served(**FAST_RETRIES) as client:
            create(client, receiver, ["completed"], seed=1)
            size = len(receiver.wait_for(1)[0].body)
        receiver.deliveries.clear()
        settings = {
            **FAST_RETRIES,
            "webhook_timeout_s": 10,
            "webhook_queue_max_bytes": size * 3 // 2,
        }
        with served(**settings) as client:
            receiver.plan, receiver.hang_s = ["hang"], 30
            held = create(client, receiver, ["completed"], seed=1)
            wait_until(lambda: len(receiver.deliveries) == 1, "the hanging delivery")
            dropped = create(client, receiver, ["completed"], seed=2)
            wait_until(lambda: "(WEBHOOK_QUEUE_MAX_BYTES)" in caplog.text, "a refusal")
            assert f"prediction {dropped} dropped" in caplog.text
            receiver.release.set()  # the hanging attempt fails; its retry is delivered
            wait_until(lambda: [d.json["id"] for d in receiver.answered()] == [held], "retry")
            after = create(client, receiver, ["completed"], seed=3)
            delivered = [d.json["id"] for d in receiver.wait_for(2)]
    assert delivered == [held, after]


def test_webhook_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from inference.settings import describe_settings_errors

    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_not base64!")
    with pytest.raises(ValidationError) as info:
        Settings()
    (problem,) = describe_settings_errors(info.value)
    assert "WEBHOOK_SECRET must be 'whsec_' followed by a base64 key" in problem
    assert "not base64" not in problem  # a secret is never echoed
    monkeypatch.setenv("WEBHOOK_SECRET", "")
    assert Settings().webhook_secret is None  # empty: unsigned
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", " Receiver.Internal ,[::1],")
    assert Settings().webhook_allowed_hosts == HostList(["receiver.internal", "::1"])
