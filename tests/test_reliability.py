"""Hardening of the HTTP API: strict input, bounded metrics, errors in the envelope, an OpenAPI
document true to this server, offline docs, redacted load errors, rate limits and CORS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from inference.http.app import create_app
from inference.http.ratelimit import RateLimiter, client_address
from inference.jobs import run_batch, service_map
from inference.models.mock import MockModel
from inference.service import Service
from inference.settings import Settings
from tests.conftest import make_service
from tests.servers import inference_server

QUICK = {"width": 64, "height": 64, "steps": 2}


@contextmanager
def serving(**fields: object) -> Iterator[TestClient]:
    """A client of an app around a started mock service with these settings."""
    settings = Settings(ui=False, **fields)
    service = Service(MockModel(), settings).start()
    try:
        with TestClient(create_app(settings, service)) as http:
            yield http
    finally:
        service.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with serving(max_width=512, max_batch_requests=4) as http:
        yield http


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"seed": True}, "seed must be an integer, got true"),
        ({"seed": "12"}, 'seed must be an integer, got "12"'),
        ({"prompt_weight": False}, "prompt_weight must be a number, got false"),
        ({"steps": "4"}, 'steps must be an integer, got "4"'),
    ],
)
def test_json_is_typed_no_bool_or_string_passes_for_a_number(
    client: TestClient, body: dict, message: str
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == message
    assert client.post("/predict", json={**QUICK, "steps": 2.0}).status_code == 200  # JSON's 2


def test_unparsable_bodies_get_a_422_in_the_envelope(client: TestClient) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    for body, text in (
        (nested, "nests JSON more than 64 levels deep"),  # refused before it is parsed
        (
            b'{"prompt": "\xff\xfe"}',
            "not valid JSON (invalid unicode code point at line 1 column 13)",
        ),
    ):
        response = client.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["type"] == "invalid_request" and error["field"] == "body"
        assert text in error["message"]


def test_client_chosen_methods_never_grow_the_metrics(client: TestClient) -> None:
    def series() -> set[str]:
        text = client.get("/metrics").text
        return {line.split(" ")[0] for line in text.splitlines() if line.startswith("http_")}

    client.request("FOO0", "/predict")
    series()  # the first scrape adds /metrics' own series
    before = series()
    for i in range(200):
        assert client.request(f"FOO{i}", "/predict").status_code == 405
    assert series() == before
    assert 'method="other"' in client.get("/metrics").text


def test_the_openapi_document_says_what_this_server_accepts(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    request = document["components"]["schemas"]["GenerateRequest"]["properties"]
    width = request["width"]
    assert width["multipleOf"] == 8
    assert [b["maximum"] for b in width["anyOf"] if b.get("type") == "integer"] == [512]
    batch = document["components"]["schemas"]["BatchRequest"]["properties"]["requests"]
    assert batch["maxItems"] == 4
    predict = document["paths"]["/predict"]["post"]["responses"]
    assert {"406", "413", "422", "429", "503", "504"} <= set(predict)
    assert "401" not in predict and "securitySchemes" not in document["components"]  # no token
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert all(kind.startswith("text/plain") for kind in metrics)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_docs_are_served_without_a_cdn(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in page
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200


def test_a_protected_server_hides_paths_in_load_errors(tmp_path: Path) -> None:
    missing = str(tmp_path / "secret-place" / "weights.json")
    for token, shows_path in ((None, True), ("s3cret", False)):
        settings = Settings(ui=False, weights_path=missing, auth_token=token)
        with TestClient(create_app(settings)) as http:
            while (ready := http.get("/ready")).json()["phase"] == "loading":
                pass
            for body in (ready.json(), http.get("/health").json()):
                assert "does not exist" in body["error"]
                assert (missing in body["error"]) is shows_path
                assert ("secret-place" in body["error"]) is shows_path


def test_rate_limit_answers_429_with_retry_after_per_client() -> None:
    with serving(rate_limit_per_minute=6, rate_limit_burst=2) as http:
        assert [http.post("/predict", json=QUICK).status_code for _ in range(2)] == [200, 200]
        limited = http.post("/predict", json=QUICK)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "10"
        assert "RATE_LIMIT_PER_MINUTE" in limited.json()["error"]["message"]
        # A token is no bucket of its own while it is not the valid one (AUTH_TOKEN unset).
        chosen = {"authorization": "Bearer another-client"}
        assert http.post("/predict", json=QUICK, headers=chosen).status_code == 429
        assert http.get("/health").status_code == 200  # probes are never limited
        other = TestClient(http.app, client=("10.0.0.2", 50000))  # another address
        assert other.post("/predict", json=QUICK).status_code == 200
        assert "http_rate_limited_total 2.0" in other.get("/metrics").text


def test_rate_limiter_refills_and_stays_bounded() -> None:
    limiter = RateLimiter(per_minute=60, burst=1, max_clients=3)
    assert limiter.take("a", now=0.0) == 0.0
    assert limiter.take("a", now=0.5) == pytest.approx(0.5)
    assert limiter.take("a", now=1.0) == 0.0  # refilled at one a second
    for name in "bcdef":
        limiter.take(name, now=2.0)
    assert len(limiter._buckets) == 3


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    import ipaddress

    from starlette.requests import Request

    def request(peer: str, forwarded: str) -> Request:
        headers = [(b"x-forwarded-for", forwarded.encode())]
        return Request({"type": "http", "client": (peer, 1), "headers": headers})

    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address(request("10.1.2.3", "203.0.113.9, 10.0.0.7"), proxies) == "203.0.113.9"
    assert client_address(request("198.51.100.4", "203.0.113.9"), proxies) == "198.51.100.4"
    assert client_address(request("10.1.2.3", "garbage"), proxies) == "10.1.2.3"
    assert client_address(request("10.1.2.3", "203.0.113.9"), []) == "10.1.2.3"


def test_cors_preflight_from_an_allowed_origin_only() -> None:
    with serving(cors_allow_origins=["https://app.example"], auth_token="t") as http:
        preflight = {
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        allowed = http.options("/predict", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        refused = http.options("/predict", headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in refused.headers
        unauthorized = http.post("/predict", json=QUICK, headers={"origin": "https://app.example"})
        assert unauthorized.status_code == 401  # readable by the app: CORS headers on errors too
        assert unauthorized.headers["access-control-allow-origin"] == "https://app.example"
    with serving() as http:  # no origins configured: no CORS
        answer = http.options("/predict", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in answer.headers


def test_a_rerun_removes_what_a_killed_run_left_half_written(tmp_path: Path) -> None:
    source = tmp_path / "r.jsonl"
    source.write_text(json.dumps({**QUICK, "seed": 1}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".image-0123456789-0.png.partial").write_bytes(b"half an image")
    service = make_service()
    try:
        run_batch(source, out, service_map(service), progress=False)
    finally:
        service.stop()
    assert not list(out.glob(".*.partial")) and len(list(out.glob("*.png"))) == 1


def test_max_connections_bounds_what_slow_clients_hold() -> None:
    """Half-sent requests hold connections; past MAX_CONNECTIONS uvicorn answers 503."""
    import socket

    with inference_server(env={"UI": "false", "MAX_CONNECTIONS": "8"}) as url:
        host, port = url.removeprefix("http://").split(":")
        slow = []
        for _ in range(8):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # never finished
            slow.append(sock)
        try:
            assert httpx.get(f"{url}/health", timeout=5).status_code == 503
        finally:
            for sock in slow:
                sock.close()
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
