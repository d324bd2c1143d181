"""A protocol is one package that declares itself: a toy protocol, defined only here and added
with one list entry, gets the image body limit on its image route, its own error shape (422 and
401) and its OpenAPI additions, with no edit anywhere else."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InvalidRequest
from inference.http.app import DEFAULT_PROTOCOLS, create_app
from inference.http.deps import PROTECTED, ServiceDep
from inference.http.protocols import ErrorShape, Protocol, paths_of
from inference.http.protocols.predictions import as_invalid_request
from inference.models.mock import MockModel
from inference.schema import Limits
from inference.service import Service
from inference.settings import Settings

# -- the toy protocol: everything it is, in one place ---------------------------------------


class ToyError(BaseModel):
    """The toy's errors: ``{"oops": {"why", "code"}}``."""

    oops: dict[str, Any]


def render_toy_error(exc: Exception) -> Response | None:
    exc = as_invalid_request(exc)
    if isinstance(exc, InvalidRequest):
        return JSONResponse({"oops": {"why": exc.message, "code": "bad_input"}}, 422)
    if isinstance(exc, StarletteHTTPException):
        return JSONResponse({"oops": {"why": str(exc.detail), "code": "denied"}}, exc.status_code)
    return None


TOY_ERRORS = ErrorShape(render_toy_error, "application/json", ToyError)


class Drawing(BaseModel):
    image: str  # base64


toy_router = APIRouter(
    prefix="/toy",
    tags=["toy"],
    dependencies=PROTECTED,
    route_class=TOY_ERRORS.route_class,
    responses=TOY_ERRORS.responses(401, 413),
)


@toy_router.post("/draw", responses=TOY_ERRORS.responses(422))
async def draw(body: Drawing, service: ServiceDep) -> dict[str, Any]:
    """Takes an image: its body may be large."""
    return {"bytes": len(base64.b64decode(body.image)), "model": service.model.name}


@toy_router.post("/note")
async def note(body: dict[str, Any]) -> dict[str, Any]:
    """Takes no image: its body gets MAX_BODY_BYTES."""
    return {"keys": sorted(body)}


def document_toy(document: dict[str, Any], limits: Limits, settings: Settings) -> None:
    document["paths"]["/toy/draw"]["post"]["x-toy-max-width"] = limits.max_width


TOY = Protocol(
    name="toy",
    routers=(toy_router,),
    image_paths=paths_of(toy_router, draw),
    errors=TOY_ERRORS,
    openapi=document_toy,
)

# -- the proof -----------------------------------------------------------------------------

LIMITS = {"max_body_bytes": 4096, "max_image_bytes": 16384, "max_wait_ms": 0}


@contextmanager
def served(protocols: tuple[Protocol, ...], **settings: Any) -> Iterator[TestClient]:
    service = Service(MockModel(), Settings(**{**LIMITS, **settings})).start()
    try:
        app = create_app(service.settings, service, protocols=protocols)
        with TestClient(app) as client:
            yield client
    finally:
        service.stop()


def _image_body(size: int) -> dict[str, str]:
    return {"image": base64.b64encode(b"x" * size).decode()}


def test_the_body_limit_follows_the_toys_image_path() -> None:
    with served((*DEFAULT_PROTOCOLS, TOY)) as client:
        settings = client.app.state.settings  # type: ignore[attr-defined]
        body = _image_body(8000)  # ~10.7 kB of JSON: over MAX_BODY_BYTES, under the image limit
        size = len(json.dumps(body))
        assert settings.max_body_bytes < size < settings.max_image_body_bytes
        accepted = client.post("/toy/draw", json=body)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"bytes": 8000, "model": "mock"}
        refused = client.post("/toy/note", json=body)
        assert refused.status_code == 413
        assert "MAX_BODY_BYTES" in refused.json()["error"]["message"]
        too_big = client.post("/toy/draw", json=_image_body(settings.max_image_body_bytes))
        assert too_big.status_code == 413


def test_the_toys_errors_come_in_its_own_shape() -> None:
    with served((*DEFAULT_PROTOCOLS, TOY), auth_token="secret") as client:
        denied = client.post("/toy/draw", json=_image_body(10))
        assert denied.status_code == 401
        assert denied.json()["oops"]["code"] == "denied"
        assert "AUTH_TOKEN" in denied.json()["oops"]["why"]
        bad = client.post(
            "/toy/draw", json={"picture": "?"}, headers={"Authorization": "Bearer secret"}
        )
        assert bad.status_code == 422
        assert bad.json() == {"oops": {"why": bad.json()["oops"]["why"], "code": "bad_input"}}
        assert "image" in bad.json()["oops"]["why"]
        # The other protocols keep theirs.
        assert "error" in client.post("/predict", json={}).json()
        replicate = client.post("/v1/predictions", json={"input": {}})
        assert replicate.headers["content-type"] == "application/problem+json"


def test_the_document_carries_the_toys_additions() -> None:
    with served((*DEFAULT_PROTOCOLS, TOY), auth_token="secret") as client:
        document = client.get("/openapi.json").json()
    operation = document["paths"]["/toy/draw"]["post"]
    assert operation["x-toy-max-width"] == client.app.state.settings.max_width  # type: ignore[attr-defined]
    assert "ToyError" in document["components"]["schemas"]
    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ToyError"
    }
    too_large = operation["responses"]["413"]["content"]["application/json"]["schema"]
    assert too_large == {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert "401" in operation["responses"]


def test_without_the_entry_the_toy_is_not_served() -> None:
    with served(DEFAULT_PROTOCOLS) as client:
        assert client.post("/toy/draw", json=_image_body(10)).status_code == 404
        assert "/toy/draw" not in client.get("/openapi.json").json()["paths"]


def test_a_protocol_names_its_image_routes_by_handler() -> None:
    async def elsewhere() -> None: ...

    assert paths_of(toy_router, draw) == ("/toy/draw",)
    with pytest.raises(ValueError, match="elsewhere"):
        paths_of(toy_router, elsewhere)


def test_replicates_prefer_header_is_checked_by_the_pattern_its_document_states() -> None:
    """One definition: the pattern in the document is the one the route checks with (the
    parser once read ``wait=5 1`` as 51 seconds while the document refused it)."""
    from inference.http.protocols.replicate.routes import PREFER, wait_seconds

    with served(DEFAULT_PROTOCOLS) as client:
        operation = client.get("/openapi.json").json()["paths"]["/v1/predictions"]["post"]
        (prefer,) = [p for p in operation["parameters"] if p["name"] == "prefer"]
        assert prefer["schema"]["pattern"] == PREFER.pattern
        answer = client.post("/v1/predictions", json={"input": {}}, headers={"Prefer": "wait=5 1"})
        assert answer.status_code == 422 and answer.json()["invalid_fields"][0]["field"] == "Prefer"
    assert wait_seconds("respond-async, Wait = 05; x=y", 30.0) == 5.0
    assert wait_seconds("wait", 30.0) == 30.0 and wait_seconds(None, 30.0) is None
