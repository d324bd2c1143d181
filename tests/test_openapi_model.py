"""/openapi.json documents the ``model`` a native request may name (issue 23): /predict's JSON
and form bodies and each /predict/batch item, with its description and examples."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from inference.http.app import create_app
from inference.service import Service
from inference.settings import Settings
from tests.conftest import make_service

REF = "#/components/schemas/RoutedRequest"


def _document() -> dict[str, Any]:
    service: Service = make_service()
    try:
        with TestClient(create_app(Settings(ui=False), service)) as client:
            return client.get("/openapi.json").json()
    finally:
        service.stop()


def test_predict_and_batch_items_document_model() -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": REF}
    batch = schemas["BatchRequest"]["properties"]["requests"]
    # An item is a RoutedRequest, but an invalid one is its own error in a 200, not a 422.
    assert batch["items"]["anyOf"][0] == {"$ref": REF}
    assert batch["items"]["anyOf"][1]["type"] == "object"
    model = schemas["RoutedRequest"]["properties"]["model"]
    assert "name@version" in model["description"]
    assert model["examples"] == ["draft", "draft@v2"]
    assert schemas["GenerateRequestForm"]["properties"]["model"] == model
    # Everything else /predict documented stays, bounded by this server's limits.
    routed, plain = schemas["RoutedRequest"]["properties"], schemas["GenerateRequest"]["properties"]
    assert {name: routed[name] for name in plain} == plain
    assert "model" not in plain  # the other protocols' inputs name no model
