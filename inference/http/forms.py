"""The body of POST /predict: a JSON object, or multipart/form-data with files.

JSON is what API clients send (images as base64 or ``data:`` URIs); multipart is what curl
(``-F image=@photo.png -F prompt=...``) and HTML forms send, without the base64 overhead. Both
become the same ``GenerateRequest`` through the one schema, so a field means the same in
either and an error reads the same. ``read_form``, the bounded multipart reader, also reads
OpenAI's image edits (``protocols/openai/params``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from typing import Any, get_args

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from inference.errors import InvalidRequest
from inference.fields import request_fields
from inference.http.errors import CLIENT_GONE
from inference.images import READABLE
from inference.schema import IMAGE_FIELDS, GenerateRequest, RoutedRequest
from inference.settings import Settings
from inference.validation import invalid_request

#: More parts than a request has fields is a mistake (or an attack on the parser).
MAX_FORM_PARTS = 2 * len(GenerateRequest.model_fields)
#: JSON bodies larger than this (base64 images) are parsed in a worker thread, off the loop.
THREAD_PARSE_BYTES = 256 * 1024
#: Numbers as form text; longer spellings than any bound needs stay text for the schema to
#: refuse (Python will not read an int of over 4,300 digits).
INTEGER = re.compile(r"^-?[0-9]{1,30}\Z")
NUMBER = re.compile(r"^-?[0-9]{1,30}(?:\.[0-9]{1,30})?(?:[eE][-+]?[0-9]{1,3})?\Z")
#: Fields by every name a request may use for them (``prompt_strength`` is ``strength``).
_FIELD_BY_NAME = {
    alias: field
    for name, field in GenerateRequest.model_fields.items()
    for alias in (name, *getattr(field.validation_alias, "choices", ()))
}
WHAT_TO_SEND = (
    "a JSON object of request fields sent with 'Content-Type: application/json', or "
    "multipart/form-data (curl -F prompt=... -F image=@photo.png)"
)


async def read_request(request: Request) -> RoutedRequest:
    """The request's body as a ``RoutedRequest`` (an ``InvalidRequest`` saying what to fix)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if media == "multipart/form-data":
            return RoutedRequest.model_validate(await _form_fields(request))
        body = await request.body()
        if media == "application/json" or media.endswith("+json"):
            if len(body) > THREAD_PARSE_BYTES:
                return await asyncio.to_thread(RoutedRequest.model_validate_json, body)
            return RoutedRequest.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None
    raise InvalidRequest(
        "body", f"the body must be a JSON object of request fields: {WHAT_TO_SEND}"
    )


#: List fields (``loras``) by name: their parts may repeat, each adding items (``form_items``).
_LIST_FIELDS = {f.name: f for f in request_fields() if f.type is list}
#: How a form spells a list field's items, said in the form schema and in errors.
LIST_FORM = (
    "In a form, repeat the field; each part is {form} (comma-separated for several) or the "
    "items as JSON (an object, or an array of them)."
)


async def _form_fields(request: Request) -> dict[str, Any]:
    """The form's fields by name, number fields as numbers; a repeated field is refused, but
    for a list field, whose parts each add items."""
    settings = request.app.state.settings
    fields: dict[str, Any] = {}
    for name, value in await read_form(request, len(IMAGE_FIELDS), MAX_FORM_PARTS, settings):
        if name in _LIST_FIELDS and isinstance(value, str):
            fields.setdefault(name, []).extend(form_items(name, value))
            continue
        if name in fields:
            raise InvalidRequest(name, f"{name} is given more than once; send it once")
        fields[name] = typed(name, value) if isinstance(value, str) else value
    return fields


def form_items(name: str, text: str) -> list[Any]:
    """One part of a list field as its items: JSON (an object or an array) when it starts as
    one, else the items' text form (``REF[:SCALE],...``) that the CLI and DEFAULT_LORAS take."""
    field = _LIST_FIELDS[name]
    if not text.lstrip().startswith(("{", "[")):
        return field.from_text(text)
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(
            name, f"{name}: a part is not valid JSON ({exc}); send {field.item_form} instead"
        ) from None
    return items if isinstance(items, list) else [items]


async def read_form(
    request: Request, max_files: int, max_fields: int, settings: Settings
) -> list[tuple[str, str | bytes]]:
    """A multipart body's parts in order: text, or an uploaded file's bytes. A blank value or
    an unselected file input (what a browser sends for an empty one) is a field not sent.
    The counts of files and fields and each text part's size are enforced while parsing; file
    parts are bounded by the body limit (``BodySizeLimit``) and checked as images later."""
    try:
        form = await request.form(
            max_files=max_files, max_fields=max_fields, max_part_size=settings.max_body_bytes
        )
    except CLIENT_GONE:
        raise  # not a bad body: nobody is left to tell
    except Exception as exc:  # starlette's MultiPartException and HTTPException carry the why
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise InvalidRequest("body", f"the multipart body cannot be read: {detail}") from None
    parts: list[tuple[str, str | bytes]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                if data or value.filename:
                    parts.append((name, data))
            elif value != "":
                parts.append((name, value))
    finally:
        await form.close()
    return parts


def typed(name: str, text: str) -> Any:
    """A form's text as the number its field holds ("4" is 4, "0.5" is 0.5): text is all a
    form can carry, and JSON bodies stay strict. Text that is no plain decimal number is left
    for the schema to refuse with its usual message."""
    field = _FIELD_BY_NAME.get(name)
    kinds = set(get_args(field.annotation)) | {field.annotation} if field else set()
    if int in kinds and INTEGER.match(text):
        return int(text)
    if float in kinds and NUMBER.match(text):
        return float(text)
    return text


def request_schemas() -> dict[str, dict[str, Any]]:
    """The components ``GenerateRequest`` (JSON) and ``GenerateRequestForm`` (the same fields
    as a multipart form whose image fields are file uploads)."""
    schema = GenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = schema.pop("$defs", {})  # models the request refers to (LoraAdapter): components
    form = as_form(schema, "GenerateRequestForm", IMAGE_FIELDS)
    # What only comes with an image (Validator._inputs): in JSON a null is an omitted field.
    needs_image = ("mask", "strength")
    schema["allOf"] = [
        {
            "if": {"properties": {name: {"not": {"type": "null"}}}, "required": [name]},
            "then": {"properties": {"image": {"type": "string"}}, "required": ["image"]},
        }
        for name in needs_image
    ]
    form["dependentRequired"] = {name: ["image"] for name in needs_image}
    return {**nested, "GenerateRequest": schema, "GenerateRequestForm": form}


def as_form(schema: dict[str, Any], title: str, files: tuple[str, ...]) -> dict[str, Any]:
    """A JSON body's ``schema`` as the multipart form's: a part is text or a file, never null
    (a field a client does not set is left out), and ``files`` are uploads."""
    form = copy.deepcopy(schema)
    form["title"] = title
    for field in form["properties"].values():
        if "anyOf" in field:
            field["anyOf"] = [b for b in field["anyOf"] if b.get("type") != "null"]
            if len(field["anyOf"]) == 1:
                field.update(field.pop("anyOf")[0])
        if field.get("default", 0) is None:
            del field["default"]
    for name, spec in _LIST_FIELDS.items():
        if name in form["properties"]:
            described = form["properties"][name].get("description", "")
            form["properties"][name]["description"] = (
                f"{described} {LIST_FORM.format(form=spec.item_form)}".strip()
            )
    for name in files:
        form["properties"][name] = {
            "type": "string",
            "format": "binary",
            "description": schema["properties"][name].get("description", "")
            + f" A file: {READABLE}.",
        }
    return form


def openapi_body() -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of POST /predict: JSON, or the same fields as a form (the
    schemas themselves are components, registered by ``http.openapi``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
                "multipart/form-data": {
                    "schema": {"$ref": "#/components/schemas/GenerateRequestForm"}
                },
            },
        }
    }
