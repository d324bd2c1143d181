"""OpenAI's images API, its shapes: the error body, our errors in its terms, and the streamed
events. The parameters and their translation are ``params``; the routes (``routes``) use both;
nothing here validates what the service validates.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import (
    ContentFlagged,
    InferenceError,
    InvalidRequest,
    ModelError,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from inference.http.errors import ClientDisconnected
from inference.http.protocols import ErrorShape
from inference.registry import UnknownModel

log = logging.getLogger(__name__)

#: Our field -> OpenAI's parameter, for errors (others keep their name).
PARAM_BY_FIELD = {"num_outputs": "n", "width": "size", "height": "size", "body": None}
#: The usage block events carry; this server counts no tokens.
NO_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


class OpenAIError(Exception):
    """An error to answer in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.kind, "param": self.param}
        return {"error": {**error, "code": self.code}}


def from_domain(exc: InferenceError) -> OpenAIError:
    """Our domain error in OpenAI's terms: the status, type, code and the parameter to blame.

    The client retries every 5xx by itself unless ``x-should-retry`` says otherwise: worth it
    for a full queue or a model still loading (after ``Retry-After``), not for a model that
    failed to load, failed on this request or ran out of time, which would fail again.
    """
    if isinstance(exc, ContentFlagged):
        return content_policy(exc.total)
    if isinstance(exc, UnknownModel):
        return OpenAIError(404, exc.message, param="model", code="model_not_found")
    if isinstance(exc, InvalidRequest):
        param = PARAM_BY_FIELD.get(exc.field, exc.field)
        message = re.sub(r"\bnum_outputs\b", "n", exc.message)
        if param == "size":
            message = f"size: {message}"
        return OpenAIError(400, message, param=param, code="invalid_value")
    retry = {"x-should-retry": "true"}
    if isinstance(exc, Overloaded):
        retry["Retry-After"] = str(exc.retry_after_s)
        return OpenAIError(503, exc.message, code="overloaded", kind="server_error", headers=retry)
    if isinstance(exc, NotReady) and not exc.permanent:
        retry["Retry-After"] = "5"
        return OpenAIError(
            503, exc.message, code="model_not_ready", kind="server_error", headers=retry
        )
    final = {"x-should-retry": "false"}
    if isinstance(exc, NotReady):
        return OpenAIError(
            503, exc.message, code="model_not_ready", kind="server_error", headers=final
        )
    if isinstance(exc, RequestTimeout):
        return OpenAIError(504, exc.message, code="timeout", kind="server_error", headers=final)
    code = "model_error" if isinstance(exc, ModelError) else exc.code
    return OpenAIError(500, exc.message, code=code, kind="server_error", headers=final)


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorEnvelope(BaseModel):
    """OpenAI's errors: ``{"error": {"message", "type", "param", "code"}}``."""

    error: OpenAIErrorBody


def _as_openai(exc: Exception) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, InferenceError):
        return from_domain(exc)
    if isinstance(exc, StarletteHTTPException):
        code = "invalid_api_key" if exc.status_code == 401 else None
        return OpenAIError(exc.status_code, str(exc.detail), code=code, headers=exc.headers)
    log.error("unhandled error on an OpenAI route", exc_info=exc)
    return OpenAIError(
        500,
        "internal server error; see the server log",
        kind="server_error",
        headers={"x-should-retry": "false"},  # a bug answers the same again
    )


def render_error(exc: Exception) -> Response | None:
    """Every error of these routes (auth and dependencies included) in OpenAI's shape; a
    client that went away is left to the app, which only counts it."""
    if isinstance(exc, ClientDisconnected):
        return None
    error = _as_openai(exc)
    return JSONResponse(error.body(), error.status, headers=error.headers)


ERRORS = ErrorShape(render_error, "application/json", OpenAIErrorEnvelope)


def content_policy(total: int) -> OpenAIError:
    """What OpenAI answers for refused content (``ContentFlagged``): here, the safety checker
    flagged every image."""
    return OpenAIError(
        400,
        f"the model's safety checker flagged all {total} images, so none is left to return; "
        "change the prompt or the seed",
        code="content_policy_violation",
    )


def partial_steps(total: int, count: int) -> set[int]:
    """The steps whose previews become partial images: spread evenly, the last step excluded
    (it is the final image). Few steps give fewer partial images, as OpenAI allows."""
    return {round(total * k / (count + 1)) for k in range(1, count + 1)} - {0, total}


def event(kind: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event, as OpenAI's stream sends it (its type in both places)."""
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()
