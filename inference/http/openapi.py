"""The OpenAPI document, made to match this server: its error envelope on every status it can
answer with, and this deployment's limits (MAX_WIDTH, MAX_STEPS, ...) as the schema's bounds, so
a client generated from /openapi.json is right about what this server accepts.

The protocol routes (Replicate, Cog, OpenAI) answer errors in their own shapes; ``protocol_errors``
documents those, and ``install_openapi`` writes what their hand-read bodies, headers and query
strings accept (the same request schema as POST /predict, with this server's limits)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from inference import codec
from inference.http.forms import request_schemas
from inference.http.openai_schema import edit_params_schema, generation_params_schema
from inference.predictions.record import CURSOR, ID_PATTERN
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


class CogFieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class CogError(BaseModel):
    """Cog's errors: ``{"detail": "..."}``, or a list of field errors on 422."""

    detail: str | list[CogFieldError]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorEnvelope(BaseModel):
    """OpenAI's errors: ``{"error": {"message", "type", "param", "code"}}``."""

    error: OpenAIErrorBody


#: Each protocol's error body: (media type, schema component).
PROTOCOL_ERRORS: dict[str, tuple[str, type[BaseModel]]] = {
    "native": ("application/json", ErrorEnvelope),
    "replicate": ("application/problem+json", Problem),
    "cog": ("application/json", CogError),
    "openai": ("application/json", OpenAIErrorEnvelope),
}
PROTOCOL_DESCRIPTIONS = {
    400: "A parameter is invalid; `param` names it.",
    404: "No such prediction (or output, or image URL).",
    **ERROR_DESCRIPTIONS,
}


def protocol_errors(protocol: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a protocol route's errors, in that protocol's shape. The body-size
    limit (413) is the app's middleware, answered in the app's envelope on every path."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        media, model = PROTOCOL_ERRORS["native" if status == 413 else protocol]
        schema = {"$ref": f"#/components/schemas/{model.__name__}"}
        responses[status] = {
            "description": PROTOCOL_DESCRIPTIONS[status],
            "content": {media: {"schema": schema}},
        }
    return responses


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


def _components(*models: type[BaseModel]) -> dict[str, Any]:
    """The JSON schemas of ``models`` and of the models they nest, as components."""
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


#: An ``http(s)://`` URL, as the webhook check wants one (whether its host may be called is
#: this server's policy, checked when the prediction is created).
WEBHOOK_URL = {"type": "string", "format": "uri", "pattern": "^https?://[^\\s/?#]+"}
_WAIT_WORD = "[Ww][Aa][Ii][Tt]"
_NOT_WAIT = f"\\s*(?!\\s|{_WAIT_WORD})[^,;]*(?:;[^,]*)?"
_WAIT = f"\\s*{_WAIT_WORD}(?: *= *0*(?:[1-9]|[1-5][0-9]|60))?\\s*(?:;[^,]*)?"
#: Replicate's Prefer header as ``replicate.wait_seconds`` reads it: preferences it does not
#: know are ignored (RFC 7240), the first ``wait`` must be ``wait`` or ``wait=N`` (1-60).
REPLICATE_PREFER = f"^(?:{_NOT_WAIT},)*(?:{_WAIT}(?:,.*)?|{_NOT_WAIT})$"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def _set_parameter(operation: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["name"] == name:
            parameter["schema"] = {**schema, "title": parameter["schema"].get("title", name)}


def _document_protocols(document: dict[str, Any], limits: Limits) -> None:
    """The predictions and OpenAI routes read their bodies and headers by hand or loosely
    typed (``dict[str, Any]`` inputs): write what they accept."""
    schemas = document["components"]["schemas"]
    schemas.update(_components(Problem, CogError, OpenAIErrorEnvelope))
    prediction_input = copy.deepcopy(schemas["GenerateRequest"])
    prediction_input.update(
        title="PredictionInput",
        additionalProperties=True,
        description="The model's inputs: GenerateRequest's fields (other keys are ignored).",
    )
    schemas["PredictionInput"] = prediction_input
    id_pattern = ID_PATTERN.pattern
    for name in ("CreatePrediction", "PredictionRequest"):
        properties = schemas[name]["properties"]
        properties["input"] = {"$ref": "#/components/schemas/PredictionInput"}
        for key in ("webhook", "webhook_completed"):
            if key in properties:
                properties[key] = {
                    "anyOf": [WEBHOOK_URL, {"type": "null"}],
                    "description": properties[key].get("description", ""),
                }
        if "id" in properties:
            properties["id"]["anyOf"] = [
                {"type": "string", "pattern": id_pattern},
                {"type": "null"},
            ]
    # PUT names the id in its path; a body's own id may only repeat it, which no schema says.
    put = copy.deepcopy(schemas["PredictionRequest"])
    del put["properties"]["id"]
    put.update(title="PredictionPut", additionalProperties=True)
    schemas["PredictionPut"] = put
    openai_body = generation_params_schema(schemas["GenerateRequest"], limits)
    schemas["GenerationParams"] = openai_body
    schemas["EditParams"] = edit_params_schema(openai_body, schemas["GenerateRequest"])
    for path, method, operation in _operations(document):
        tags = operation.get("tags", [])
        if "replicate" in tags and method == "post":
            _set_parameter(operation, "prefer", {"type": "string", "pattern": REPLICATE_PREFER})
        if path == "/predictions/{prediction_id}" and method == "put":
            _set_parameter(operation, "prediction_id", {"type": "string", "pattern": id_pattern})
            content = operation["requestBody"]["content"]["application/json"]
            content["schema"] = {"$ref": "#/components/schemas/PredictionPut"}
        if path == "/v1/predictions" and method == "get":
            _set_parameter(operation, "cursor", {"type": "string", "pattern": CURSOR.pattern})
        if path == "/v1/images/generations":
            content = operation["requestBody"]["content"]["application/json"]
            content["schema"] = {"$ref": "#/components/schemas/GenerationParams"}
        if path == "/v1/images/edits":
            content = operation["requestBody"]["content"]["multipart/form-data"]
            content["schema"] = {"$ref": "#/components/schemas/EditParams"}


def _drop_framework_422(document: dict[str, Any]) -> None:
    """FastAPI documents a 422 of its own on every route with parameters; each route of this
    app declares the 422 it really answers (in its protocol's shape) or has none."""
    for _, _, operation in _operations(document):
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
            for name in ("GenerateRequest", "GenerateRequestForm"):  # MAX_LORAS
                loras = schemas[name]["properties"]["loras"]
                for branch in loras.get("anyOf", [loras]):
                    if branch.get("type") == "array":
                        branch["maxItems"] = settings.max_loras
            batch = document["components"]["schemas"]["BatchRequest"]["properties"]["requests"]
            batch["maxItems"] = settings.max_batch_requests
            _document_protocols(document, limits)
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
