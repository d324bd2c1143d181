"""Replicate's errors: RFC 7807 problem details (``application/problem+json``), which the
official client raises as ``ReplicateError``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InferenceError, InvalidRequest
from inference.http.errors import STATUS_BY_ERROR, retry_headers
from inference.http.protocols import ErrorShape
from inference.http.protocols.predictions import as_invalid_request
from inference.registry import UnknownModel


class InvalidField(BaseModel):
    type: str
    field: str
    description: str


class Problem(BaseModel):
    """Replicate's errors (RFC 7807 problem details, ``application/problem+json``)."""

    title: str
    detail: str
    status: int
    invalid_fields: list[InvalidField] | None = None


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"title": title, "detail": detail, "status": status, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def render_error(exc: Exception) -> Response | None:
    """Replicate's shape for every error these routes raise."""
    exc = as_invalid_request(exc)
    if isinstance(exc, UnknownModel):  # Replicate's answer to a model it does not have
        return problem(404, "Not found", exc.message, available=exc.available)
    if isinstance(exc, InvalidRequest):
        fields = [
            {"type": "invalid", "field": e["field"], "description": e["message"]}
            for e in exc.errors
        ]
        return problem(422, "Input validation failed", exc.message, invalid_fields=fields)
    if isinstance(exc, InferenceError):
        status = STATUS_BY_ERROR.get(type(exc), 500)
        response = problem(status, HTTPStatus(status).phrase, exc.message)
        response.headers.update(retry_headers(exc))
        return response
    if isinstance(exc, StarletteHTTPException):
        title = HTTPStatus(exc.status_code).phrase
        response = problem(exc.status_code, title, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response
    return None


ERRORS = ErrorShape(render_error, "application/problem+json", Problem)
