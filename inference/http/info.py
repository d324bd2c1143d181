"""Service routes: what is served (GET /), liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from inference.http.deps import PROTECTED, FleetDep, ServiceDep, SettingsDep
from inference.http.openapi import error_refs
from inference.service import Service
from inference.settings import Settings

router = APIRouter(tags=["service"])
#: Absolute paths in a load error: shown to anyone only while the server has no AUTH_TOKEN.
_PATH = re.compile(r"(?<![\w.])/[^\s'\"]+")


class Health(BaseModel):
    status: str
    error: str | None = None


class Readiness(BaseModel):
    ready: bool
    phase: str
    model: str
    error: str | None = None


def public_load_error(service: Service, settings: Settings) -> str | None:
    """The load error, with file paths hidden from anonymous callers of a protected server."""
    error = service.engine.load_error
    if error is None or settings.auth_token is None:
        return error
    return _PATH.sub("<path>", error)


@router.get("/")
async def root(service: ServiceDep, fleet: FleetDep, request: Request) -> dict[str, Any]:
    """Service info: model, version, defaults, limits, and links to the docs and the web UI;
    ``models``: each model and version with its weight, state, queue depth and requests served
    (the default version's defaults and limits are the ones above)."""
    # The UI is linked even when it is off: there it answers how to turn it on.
    return service.info() | {"ui": request.app.state.ui_url, "models": fleet.table()}


@router.head("/", response_class=Response, responses={200: {"description": "Serving"}})
async def root_head() -> Response:
    """What a platform's health probe sends: 200 while the process serves."""
    return Response()


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "The model failed to load"}},
)
async def health(service: ServiceDep, settings: SettingsDep) -> JSONResponse:
    """Liveness: 200 while the process serves, 503 once the model failed to load."""
    if service.engine.phase == "failed":  # no retry fixes it: let the platform restart or alert
        body = {"status": "failed", "error": public_load_error(service, settings)}
        return JSONResponse(body, 503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Loading, failed or shutting down"}},
)
async def ready(service: ServiceDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up, 503 before and while stopping."""
    body: dict[str, Any] = {
        "ready": service.engine.ready,
        "phase": service.engine.phase,
        "model": service.model.name,
    }
    if service.engine.load_error:
        body["error"] = public_load_error(service, settings)
    return JSONResponse(body, status_code=200 if service.engine.ready else 503)


@router.get(
    "/metrics",
    dependencies=PROTECTED,
    response_class=PlainTextResponse,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **error_refs(401, 429),
    },
)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
