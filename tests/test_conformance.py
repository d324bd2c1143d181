"""The server fixes the fuzzer (tests/test_fuzz.py) found on the predictions and OpenAI routes,
each pinned by a focused test, and the document's claims those fixes rely on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from inference.http.app import create_app
from inference.models.mock import MockModel
from inference.service import Service
from inference.settings import Settings

SMALL = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "seed": 1}


@contextmanager
def served(**settings: Any) -> Iterator[TestClient]:
    service = Service(MockModel(), Settings(**{"max_wait_ms": 0, **settings})).start()
    try:
        with TestClient(create_app(service.settings, service)) as client:
            yield client
    finally:
        service.stop()


def test_405_lists_every_method_of_a_path_served_by_several_routes() -> None:
    with served() as client:
        answer = client.options("/predictions/abc")
        assert answer.status_code == 405
        allowed = {m.strip() for m in answer.headers["allow"].split(",")}
        assert {"GET", "PUT"} <= allowed and "POST" not in allowed
        assert client.delete("/predict").headers["allow"] == "POST"


def test_unreadable_bodies_are_422_in_each_protocols_shape() -> None:
    with served() as client:
        for path in ("/v1/predictions", "/v1/models/o/n/predictions"):
            answer = client.post(
                path, content=b"\xff\x12\xfe", headers={"content-type": "application/json"}
            )
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["invalid_fields"][0]["field"] == "body"
        cog = client.post(
            "/predictions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert cog.status_code == 422 and cog.json()["detail"][0]["loc"] == ["body", "body"]


def test_multipart_numbers_are_read_as_numbers() -> None:
    with served() as client:
        fields = {k: (None, str(v)) for k, v in SMALL.items()}
        answer = client.post("/predict", files=fields)
        assert answer.status_code == 200, answer.text
        assert answer.json()["images"][0]["width"] == 64
        bad = client.post("/predict", files={**fields, "steps": (None, "two")})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "steps"


def test_a_known_cog_id_answers_only_a_valid_request() -> None:
    with served() as client:
        first = client.put("/predictions/known-1", json={"input": SMALL})
        assert first.status_code == 200, first.text
        again = client.put("/predictions/known-1", json={"input": SMALL})
        assert again.status_code == 200 and again.json()["id"] == "known-1"
        bad = client.put("/predictions/known-1", json={"input": SMALL, "webhook": "AAA"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "webhook"]


def test_replicate_checks_webhook_completed_and_strict_stream() -> None:
    with served() as client:
        body = {"input": SMALL, "webhook_completed": "not a url"}
        answer = client.post("/v1/predictions", json=body)
        assert answer.status_code == 422
        assert answer.json()["invalid_fields"][0]["field"] == "webhook_completed"
        streamed = client.post("/v1/predictions", json={"input": SMALL, "stream": "yes"})
        assert streamed.status_code == 422


def test_openai_partial_images_and_stream_are_strict() -> None:
    with served() as client:
        for extra in ({"partial_images": False}, {"partial_images": "1"}, {"stream": 1}):
            answer = client.post("/v1/images/generations", json={"prompt": "a fox", **extra})
            assert answer.status_code == 400, (extra, answer.text)
            assert answer.json()["error"]["param"] == next(iter(extra))


def test_list_cursor_round_trips_and_matches_its_documented_pattern() -> None:
    with served() as client:
        for _ in range(2):
            client.post("/v1/predictions", json={"input": SMALL})
        document = client.get("/openapi.json").json()
        (cursor,) = [
            p
            for p in document["paths"]["/v1/predictions"]["get"]["parameters"]
            if p["name"] == "cursor"
        ]
        pattern = cursor["schema"]["pattern"]
        from inference.http.protocols.replicate import routes as replicate

        page = client.get("/v1/predictions").json()
        made = replicate._cursor(replicate.Prediction(id="abc", protocol="replicate", input={}))
        assert re.match(pattern, made)
        assert client.get("/v1/predictions", params={"cursor": made}).status_code == 200
        assert client.get("/v1/predictions", params={"cursor": ""}).status_code == 422
        assert len(page["results"]) == 2


def test_document_declares_the_protocol_errors_and_no_framework_422() -> None:
    with served() as client:
        paths = client.get("/openapi.json").json()["paths"]
    get_one = paths["/v1/predictions/{prediction_id}"]["get"]["responses"]
    assert "application/problem+json" in get_one["404"]["content"] and "422" not in get_one
    create = paths["/v1/predictions"]["post"]["responses"]
    assert "application/problem+json" in create["422"]["content"]
    assert (
        "text/event-stream"
        in paths["/v1/predictions/{prediction_id}/stream"]["get"]["responses"]["200"]["content"]
    )
    assert "404" in paths["/predictions/{prediction_id}/cancel"]["post"]["responses"]
    assert "400" in paths["/v1/images/generations"]["post"]["responses"]
