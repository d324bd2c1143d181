"""Service routes: what is served (GET /), liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference.http.deps import PROTECTED, ServiceDep

router = APIRouter(tags=["service"])


@router.api_route("/", methods=["GET", "HEAD"])
async def root(service: ServiceDep) -> dict[str, Any]:
    """Service info: model, version, defaults and limits."""
    return service.info()


@router.get("/health", responses={503: {"description": "Model failed"}})
async def health(service: ServiceDep) -> JSONResponse:
    """Liveness: 200 while the process serves, 503 once the model failed to load."""
    if service.phase == "failed":  # no retry fixes it: let the platform restart or alert
        return JSONResponse({"status": "failed", "error": service.load_error}, 503)
    return JSONResponse({"status": "ok"})


@router.get("/ready", responses={503: {"description": "Not ready yet"}})
async def ready(service: ServiceDep) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up, 503 before."""
    body: dict[str, Any] = {
        "ready": service.ready,
        "phase": service.phase,
        "model": service.model.name,
    }
    if service.load_error:
        body["error"] = service.load_error
    return JSONResponse(body, status_code=200 if service.ready else 503)


@router.get("/metrics", dependencies=PROTECTED)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
