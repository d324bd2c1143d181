"""The error envelope, and the one place domain errors become HTTP responses.

Every error this app produces, from a route, a middleware or the UI's notice, is
``{"error": {"type", "message", ...}}`` with a status from ``STATUS_BY_ERROR`` or the
framework's own (401, 404, 405, 406, 413).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from inference.errors import (
    InferenceError,
    InvalidRequest,
    ModelError,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    error_body,
)
from inference.registry import RegistryError, UnknownModel
from inference.validation import invalid_request

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[InferenceError], int] = {
    InvalidRequest: 422,
    RegistryError: 422,
    UnknownModel: 404,
    PayloadTooLarge: 413,
    Overloaded: 503,
    NotReady: 503,
    RequestTimeout: 504,
    ModelError: 500,
}


class ClientDisconnected(Exception):
    """The client closed the connection before its result was ready."""


#: A client that went away, before its body was read (Starlette's) or its result was ready
#: (ours): nobody is left to answer, so it is no error of the server's, only a metric (499).
CLIENT_GONE = (ClientDisconnected, ClientDisconnect)
#: What every protocol says for an error it did not expect (the server log has the details).
INTERNAL_ERROR = "internal server error; see the server log"


def error_bytes(kind: str, message: str) -> bytes:
    """The envelope as bytes, for pure ASGI middleware that answers without FastAPI."""
    return json.dumps(error_body(kind, message)).encode()


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(kind, message, **extra), status_code=status)


def domain_error_response(exc: InferenceError) -> JSONResponse:
    """A domain error as its status and envelope (with Retry-After where a retry helps)."""
    status = STATUS_BY_ERROR.get(type(exc), 500)
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidRequest):
        extra["field"] = exc.field
        extra["errors"] = exc.errors
    if isinstance(exc, UnknownModel):
        extra["available"] = exc.available
    response = error_response(status, exc.code, exc.message, **extra)
    response.headers.update(retry_headers(exc))
    return response


def retry_headers(exc: InferenceError) -> dict[str, str]:
    """``Retry-After`` where waiting helps: a full queue (its estimate), a model still loading
    or a server draining (5 s); none where a retry would fail the same way."""
    if isinstance(exc, Overloaded):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, NotReady) and not exc.permanent:
        return {"Retry-After": "5"}
    return {}


def unparsable_body(cause: BaseException) -> str:
    """Why FastAPI could not read a JSON body, said as the fix."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 text (byte {cause.start}); send UTF-8 encoded JSON"
    if isinstance(cause, RecursionError):
        return "the body nests JSON too deeply; send a flat JSON object of request fields"
    return f"the body could not be read as JSON ({type(cause).__name__}); send a JSON object"


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path. Starlette's 405 lists only the
    first route that matched the path, so a path served by two routes (Cog's
    ``GET`` and ``PUT /predictions/{id}``) would hide one of them."""
    methods = []
    for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return methods


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise through the envelope."""

    @app.exception_handler(InferenceError)
    async def _inference_error(_: Request, exc: InferenceError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return domain_error_response(invalid_request(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse it
            return domain_error_response(InvalidRequest("body", unparsable_body(exc.__cause__)))
        response = error_response(exc.status_code, "http_error", str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    async def _disconnected(request: Request, exc: Exception) -> Response:
        log.info("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=499)  # nobody reads it; it labels the metric

    for gone in CLIENT_GONE:
        app.add_exception_handler(gone, _disconnected)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_unexpected(request, exc)
        return error_response(500, "internal_error", INTERNAL_ERROR)


def log_unexpected(request: Request, exc: Exception) -> None:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
