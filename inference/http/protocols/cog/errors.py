"""Cog's errors: ``{"detail": "..."}``, or on 422 a list of field errors as FastAPI writes them
(Cog's own server is a FastAPI app)."""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InferenceError, InvalidRequest
from inference.http.errors import STATUS_BY_ERROR, retry_headers
from inference.http.protocols import ErrorShape
from inference.http.protocols.predictions import as_invalid_request


class CogFieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class CogError(BaseModel):
    """Cog's errors: ``{"detail": "..."}``, or a list of field errors on 422."""

    detail: str | list[CogFieldError]


def render_error(exc: Exception) -> Response | None:
    """Cog's shapes: 422 ``{"detail": [{"loc", "msg", "type"}]}``, otherwise ``{"detail"}``."""
    exc = as_invalid_request(exc)
    if isinstance(exc, InvalidRequest):
        detail = [
            {"loc": ["body", *e["field"].split(".")], "msg": e["message"], "type": "value_error"}
            for e in exc.errors
        ]
        return JSONResponse({"detail": detail}, status_code=422)
    if isinstance(exc, InferenceError):
        status = STATUS_BY_ERROR.get(type(exc), 500)
        return JSONResponse({"detail": exc.message}, status, headers=retry_headers(exc))
    if isinstance(exc, StarletteHTTPException):
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )
    return None


ERRORS = ErrorShape(render_error, "application/json", CogError)
