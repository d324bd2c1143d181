"""The OpenAPI document, made to match this server: its error envelope on every status it can
answer with, and this deployment's limits (MAX_WIDTH, MAX_STEPS, ...) as the schema's bounds, so
a client generated from /openapi.json is right about what this server accepts.

The protocols (``inference.http.protocols``) answer errors in their own shapes and document
them with their ``ErrorShape``; ``install_openapi`` adds each one's error body and runs its
edits (what its hand-read bodies, headers and query strings accept), with the helpers here. It
takes those as plain values, so this module knows nothing of ``Protocol``, which imports it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from inference import codec
from inference.http.forms import request_schemas
from inference.schema import Limits
from inference.settings import Settings

#: Edits the OpenAPI document in place, with this deployment's limits and settings.
OpenAPIEdit = Callable[[dict[str, Any], Limits, Settings], None]


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
    404: "No such model or version (`available` lists this server's), or the admin routes are "
    "off (no ADMIN_TOKEN or AUTH_TOKEN).",
    406: "Accept asks for an image type this server does not write.",
    413: "The body is larger than MAX_BODY_BYTES.",
    422: "A field is invalid or over a limit of this server; `field` names it.",
    429: "Too many requests from this client (RATE_LIMIT_PER_MINUTE); see Retry-After.",
    500: "The model failed; the details are in the server log.",
    503: "Loading, overloaded or shutting down; see Retry-After.",
    504: "The request did not finish within REQUEST_TIMEOUT_S.",
}


#: A 200 whose body is an image file in any output format this server writes.
IMAGE_FILE: dict[str, Any] = {
    "content": {
        f.media_type: {"schema": {"type": "string", "format": "binary"}}
        for f in codec.FORMATS.values()
    }
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


#: The app's envelope, as (media type, schema component): the 413 every path answers with.
ENVELOPE = ("application/json", ErrorEnvelope.__name__)
PROTOCOL_DESCRIPTIONS = {
    **ERROR_DESCRIPTIONS,
    400: "A parameter is invalid; `param` names it.",
    404: "No such prediction (or output, or image URL), or no such model.",
}


def event_stream(*events: str, ids: bool) -> dict[str, Any]:
    """A 200 of server-sent events (OpenAPI 3.1: ``schema`` describes each event)."""
    event: dict[str, Any] = {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": list(events)},
            "data": {"type": "string"},
            **({"id": {"type": "string"}} if ids else {}),
        },
        "required": ["event", "data", *(["id"] if ids else [])],
    }
    return {200: {"content": {"text/event-stream": {"schema": event}}}}


def components(*models: type[BaseModel]) -> dict[str, Any]:
    """The JSON schemas of ``models`` and of the models they nest, as components."""
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, by_method in document["paths"].items()
        for method, operation in by_method.items()
    ]


def set_parameter(operation: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["name"] == name:
            parameter["schema"] = {**schema, "title": parameter["schema"].get("title", name)}


def _drop_framework_422(document: dict[str, Any]) -> None:
    """FastAPI documents a 422 of its own on every route with parameters; each route of this
    app declares the 422 it really answers (in its protocol's shape) or has none."""
    for _, _, operation in operations(document):
        responses = operation.get("responses", {})
        schema = responses.get("422", {}).get("content", {}).get("application/json", {})
        if schema.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
            del responses["422"]
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _bound(schema: dict[str, Any], maximum: int) -> None:
    """Set ``maximum`` on the numeric branch of a property (``int | None`` is an anyOf)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") in ("integer", "number"):
            branch["maximum"] = maximum


def install_openapi(
    app: FastAPI,
    limits: Limits,
    settings: Settings,
    error_models: Iterable[type[BaseModel]],
    edits: Iterable[OpenAPIEdit],
) -> None:
    """Build the document once, with ``limits`` written into the request schema, the
    protocols' error bodies (``error_models``) and ``edits``, and the bearer-token requirement
    only where this server has one (AUTH_TOKEN set)."""
    error_models, edits = tuple(error_models), tuple(edits)
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
            for name in ("GenerateRequest", "GenerateRequestForm"):  # MAX_LORAS
                loras = schemas[name]["properties"]["loras"]
                for branch in loras.get("anyOf", [loras]):
                    if branch.get("type") == "array":
                        branch["maxItems"] = settings.max_loras
            schemas.update(components(*error_models))
            for edit in edits:
                edit(document, limits, settings)
            _drop_framework_422(document)
            if settings.auth_token is None:
                for operations in document["paths"].values():
                    for operation in operations.values():
                        operation.pop("security", None)
                        operation.get("responses", {}).pop("401", None)
                document["components"].pop("securitySchemes", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
