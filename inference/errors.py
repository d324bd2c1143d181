"""Domain errors, free of HTTP: the app maps each to a status code in one place.

Every runtime (HTTP, Cog, Modal, batch jobs) raises and catches these same types, so a message
such as "steps must be <= 50 (MAX_STEPS), got 80" reads the same wherever it surfaces.
"""

from __future__ import annotations

from typing import Any


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The native error envelope, ``{"error": {"type", "message"}}``: the HTTP app and the UI
    page both answer with it, so it lives here, below both."""
    return {"error": {"type": kind, "message": message, **extra}}


class InferenceError(Exception):
    """Base class; ``code`` is a stable machine-readable name for clients."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (Modal, Cog workers); rebuild them from their
        # attributes, since subclasses take other arguments than Exception.args holds.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[InferenceError], state: dict[str, object]) -> InferenceError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class InvalidRequest(InferenceError, ValueError):
    """The request breaks the schema, a limit or a model constraint; ``field`` names where.

    ``errors`` lists every problem as ``{"field", "message"}`` (a request can break several
    schema rules at once); ``message`` joins them.
    """

    code = "invalid_request"

    def __init__(
        self, field: str, message: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.errors = errors or [{"field": field, "message": message}]


class PayloadTooLarge(InvalidRequest):
    """An image in the request is over a size limit (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS)."""

    code = "payload_too_large"


class Overloaded(InferenceError):
    """The queue is full; the client should retry after ``retry_after_s`` seconds."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(InferenceError):
    """The model is still loading (or failed to load, which no retry fixes: ``permanent``)."""

    code = "not_ready"

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class RequestTimeout(InferenceError):
    """The request did not finish within ``request_timeout_s``."""

    code = "timeout"


class ModelError(InferenceError):
    """The model call failed; details are in the server log, not sent to clients."""

    code = "model_error"


class ContentFlagged(InferenceError):
    """The safety checker flagged every image of a result, and the protocol leaves flagged
    images out (``results.unflagged``): nothing is left to return."""

    code = "content_flagged"

    def __init__(self, message: str, total: int) -> None:
        super().__init__(message)
        self.total = total


class ModelLoadError(InferenceError):
    """The model could not be loaded: bad path, missing weights, unsafe format."""

    code = "model_load_error"
