"""The FastAPI app: routes, auth and the one place domain errors become HTTP responses.

``create_app(settings, engine)`` builds an app around an engine; without one it builds the engine
from settings and loads it in the background, so /health and / answer while the model loads
(a Space's health probe and a Modal cold start both need that). ``uvicorn inference.app:app``
serves the default app.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from contextlib import asynccontextmanager
from functools import cache
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference import __version__
from inference.engine import Engine
from inference.errors import (
    InferenceError,
    InvalidRequest,
    ModelError,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from inference.images import FORMAT_BY_MEDIA_TYPE
from inference.logs import configure_logging
from inference.metrics import Metrics
from inference.middleware import BodySizeLimit, MetricsMiddleware
from inference.schema import (
    BatchItem,
    BatchItemError,
    BatchRequest,
    BatchResponse,
    GenerateRequest,
    GenerateResult,
    describe_errors,
)
from inference.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_BY_ERROR: dict[type[InferenceError], int] = {
    InvalidRequest: 422,
    Overloaded: 503,
    NotReady: 503,
    RequestTimeout: 504,
    ModelError: 500,
}


# Module level: FastAPI resolves dependency annotations from the module's globals.
BearerToken = Annotated[
    HTTPAuthorizationCredentials | None,
    Security(HTTPBearer(auto_error=False, description="Needed when AUTH_TOKEN is set.")),
]


class ClientDisconnected(Exception):
    """The client closed the connection before its result was ready."""


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status)


async def until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` unless the client disconnects first, in which case cancel it.

    Cancelling the engine call abandons the request, so the batcher drops it (or stops its
    batch between steps) instead of computing images nobody will read.
    """
    task = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientDisconnected


def _preferred_image_format(accept: str) -> str | None:
    """'png'/'jpeg'/'webp' (or '*' for image/*) when Accept prefers an image over JSON."""
    best, best_q = None, 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = media.lower(), q
    if best == "image/*":
        return "*"
    if best and best.startswith("image/") and best not in FORMAT_BY_MEDIA_TYPE:
        raise StarletteHTTPException(
            406,
            f"Accept asks for {best}; this server answers with "
            f"{', '.join(sorted(FORMAT_BY_MEDIA_TYPE))} or application/json",
        )
    return FORMAT_BY_MEDIA_TYPE.get(best or "")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the HTTP app. An injected engine is started if needed but never stopped here."""
    settings = settings or get_settings()
    owns_engine = engine is None
    engine = engine or Engine.from_settings(settings)
    metrics = Metrics()
    metrics.bind(engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        loading = None
        if engine.phase == "created":
            # Load in a thread so the server answers /health and / while the weights load.
            loading = asyncio.create_task(asyncio.to_thread(engine.start))
            loading.add_done_callback(lambda t: t.cancelled() or t.exception())
        yield
        if owns_engine:
            engine.stop()
        if loading is not None and not loading.done():
            log.warning("shutting down while the model is still loading")

    app = FastAPI(
        title="diffusion-serve",
        version=__version__,
        summary="Text-to-image inference with dynamic batching.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.metrics = metrics

    def require_token(credentials: BearerToken) -> None:
        if settings.auth_token is None:
            return
        expected = settings.auth_token.get_secret_value().encode()
        given = credentials.credentials.encode() if credentials else b""
        if not secrets.compare_digest(given, expected):
            raise StarletteHTTPException(
                401,
                "missing or wrong token: send 'Authorization: Bearer <AUTH_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    protected = [Depends(require_token)]

    # -- error mapping: the only place domain errors meet HTTP -------------------------------

    @app.exception_handler(InferenceError)
    async def _inference_error(_: Request, exc: InferenceError) -> JSONResponse:
        status = STATUS_BY_ERROR.get(type(exc), 500)
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidRequest):  # the same shape as a schema 422
            extra["field"] = exc.field
            extra["errors"] = [{"field": exc.field, "message": exc.message}]
        response = error_response(status, exc.code, exc.message, **extra)
        if isinstance(exc, Overloaded):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        elif isinstance(exc, NotReady) and not exc.permanent:
            response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = describe_errors(exc.errors())
        message = "; ".join(e["message"] for e in errors)
        return error_response(
            422, "invalid_request", message, field=errors[0]["field"], errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, "http_error", str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(ClientDisconnected)
    async def _disconnected(_: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody reads it; it labels the metric

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error; see the server log")

    # -- routes ------------------------------------------------------------------------------

    def service_info() -> dict[str, Any]:
        defaults, limits = engine.defaults, engine.limits
        return {
            "name": "diffusion-serve",
            "version": __version__,
            "model": engine.model.name,
            "phase": engine.phase,
            "ready": engine.ready,
            "defaults": vars(defaults),
            "limits": {
                **vars(limits),
                "max_batch_size": engine.max_batch_size,
                "max_wait_ms": engine.max_wait_s * 1000,
                "max_queue_size": engine.max_queue_size,
                "request_timeout_s": engine.request_timeout_s,
                "max_batch_requests": settings.max_batch_requests,
                "max_body_bytes": settings.max_body_bytes,
            },
            "auth": settings.auth_token is not None,
            "docs": "/docs",
        }

    @app.api_route("/", methods=["GET", "HEAD"], tags=["service"])
    async def root() -> dict[str, Any]:
        """Service info: model, version, defaults and limits."""
        return service_info()

    @app.get("/health", tags=["service"], responses={503: {"description": "Model failed"}})
    async def health() -> JSONResponse:
        """Liveness: 200 while the process serves, 503 once the model failed to load."""
        if engine.phase == "failed":  # no retry fixes it: let the platform restart or alert
            return JSONResponse({"status": "failed", "error": engine.load_error}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/ready", tags=["service"], responses={503: {"description": "Not ready yet"}})
    async def ready() -> JSONResponse:
        """Readiness: 200 once the model is loaded and warmed up, 503 before."""
        body: dict[str, Any] = {
            "ready": engine.ready,
            "phase": engine.phase,
            "model": engine.model.name,
        }
        if engine.load_error:
            body["error"] = engine.load_error
        return JSONResponse(body, status_code=200 if engine.ready else 503)

    @app.get("/metrics", tags=["service"], dependencies=protected)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/predict",
        tags=["inference"],
        dependencies=protected,
        response_model=GenerateResult,
        responses={
            200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
            422: {"description": "Invalid request"},
            503: {"description": "Loading or overloaded"},
        },
    )
    async def predict(body: GenerateRequest, request: Request) -> Any:
        """Generate images: JSON with base64 images, or raw image bytes for Accept: image/*."""
        fmt = _preferred_image_format(request.headers.get("accept", ""))
        if fmt not in (None, "*", body.output_format):
            if "output_format" in body.model_fields_set:
                raise InvalidRequest(
                    "output_format",
                    f"Accept asks for image/{fmt} but output_format is {body.output_format!r}; "
                    "drop one of them",
                )
            body = body.model_copy(update={"output_format": fmt})
        if fmt is not None and body.num_outputs > 1:
            raise InvalidRequest(
                "num_outputs",
                f"Accept: image/* returns one image, but num_outputs is {body.num_outputs}; "
                "accept application/json for several, or ask for one",
            )
        result = await until_disconnect(request, engine.submit(body))
        if fmt is None:
            return result
        image = result.images[0]
        timings = result.timings
        return Response(
            image.data,
            media_type=image.media_type,
            headers={
                "X-Seed": str(image.seed),
                "X-Model": result.model,
                "X-Batch-Size": str(result.batch_size),
                "Server-Timing": (
                    f"queue;dur={timings.queue_ms:.1f}, inference;dur={timings.inference_ms:.1f}, "
                    f"encode;dur={timings.encode_ms:.1f}"
                ),
            },
        )

    @app.post("/predict/batch", tags=["inference"], dependencies=protected)
    async def predict_batch(body: BatchRequest, request: Request) -> BatchResponse:
        """Serve several requests at once (they share batches); results in request order."""
        if len(body.requests) > settings.max_batch_requests:
            raise InvalidRequest(
                "requests",
                f"requests must hold at most {settings.max_batch_requests} items on this server "
                f"(MAX_BATCH_REQUESTS), got {len(body.requests)}",
            )
        outcomes = await until_disconnect(
            request,
            asyncio.gather(*(engine.submit(r) for r in body.requests), return_exceptions=True),
        )
        items = []
        for outcome in outcomes:
            if isinstance(outcome, GenerateResult):
                items.append(BatchItem(result=outcome))
            elif isinstance(outcome, InferenceError):
                field = outcome.field if isinstance(outcome, InvalidRequest) else None
                items.append(
                    BatchItem(
                        error=BatchItemError(
                            type=outcome.code, message=outcome.message, field=field
                        )
                    )
                )
            else:
                log.error("unexpected error in a batch item", exc_info=outcome)
                items.append(
                    BatchItem(
                        error=BatchItemError(
                            type="internal_error",
                            message="internal server error; see the server log",
                        )
                    )
                )
        return BatchResponse(results=items)

    # The browser UI at /ui calls this same engine (gradio is imported only inside mount_ui).
    from inference.ui import mount_ui

    mount_ui(app, engine, settings)

    # The last added runs first: metrics outermost, so refused bodies (413) are counted too.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


@cache
def _default_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)  # the CLI does this; bare uvicorn does not
    return create_app(settings)


def __getattr__(name: str) -> Any:
    """``inference.app:app`` for uvicorn, built on first access so importing reads no env."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
