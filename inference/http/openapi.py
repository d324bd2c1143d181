"""The OpenAPI document, made to match this server: its error envelope on every status it can
answer with, and this deployment's limits (MAX_WIDTH, MAX_STEPS, ...) as the schema's bounds, so
a client generated from /openapi.json is right about what this server accepts."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from inference.http.forms import request_schemas
from inference.schema import Limits
from inference.settings import Settings


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    type: str
    message: str
    field: str | None = None
    errors: list[FieldError] | None = None


class ErrorEnvelope(BaseModel):
    """Every error this server answers with: ``{"error": {"type", "message", ...}}``."""

    error: ErrorBody


ERROR_DESCRIPTIONS = {
    401: "AUTH_TOKEN is set and the bearer token is missing or wrong.",
    406: "Accept asks for an image type this server does not write.",
    413: "The body is larger than MAX_BODY_BYTES.",
    422: "A field is invalid or over a limit of this server; `field` names it.",
    429: "Too many requests from this client (RATE_LIMIT_PER_MINUTE); see Retry-After.",
    500: "The model failed; the details are in the server log.",
    503: "Loading, overloaded or shutting down; see Retry-After.",
    504: "The request did not finish within REQUEST_TIMEOUT_S.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer with these error statuses."""
    return {
        status: {"model": ErrorEnvelope, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def error_refs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Like ``error_responses``, for a route whose success is not JSON (FastAPI would give its
    errors the route's media type); the envelope is registered by the JSON routes."""
    schema = {"$ref": "#/components/schemas/ErrorEnvelope"}
    return {
        status: {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": schema}},
        }
        for status in statuses
    }


def _bound(schema: dict[str, Any], maximum: int) -> None:
    """Set ``maximum`` on the numeric branch of a property (``int | None`` is an anyOf)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") in ("integer", "number"):
            branch["maximum"] = maximum


def install_openapi(app: FastAPI, limits: Limits, settings: Settings) -> None:
    """Build the document once, with ``limits`` written into the request schema, and the
    bearer-token requirement only where this server has one (AUTH_TOKEN set)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(request_schemas())
            for name in ("GenerateRequest", "GenerateRequestForm"):
                request = schemas[name]["properties"]
                for field, maximum in (
                    ("steps", limits.max_steps),
                    ("width", limits.max_width),
                    ("height", limits.max_height),
                    ("num_outputs", limits.max_outputs),
                ):
                    _bound(request[field], maximum)
            request = schemas["GenerateRequest"]["properties"]
            for branch in request["loras"].get("anyOf", []):  # MAX_LORAS
                if branch.get("type") == "array":
                    branch["maxItems"] = settings.max_loras
            batch = document["components"]["schemas"]["BatchRequest"]["properties"]["requests"]
            batch["maxItems"] = settings.max_batch_requests
            if settings.auth_token is None:
                for operations in document["paths"].values():
                    for operation in operations.values():
                        operation.pop("security", None)
                        operation.get("responses", {}).pop("401", None)
                document["components"].pop("securitySchemes", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
