"""Schemathesis hooks for tests/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

A prediction's ``webhook`` is documented as what it is, an ``http(s)://`` URL; whether its host
may be called is decided at creation by DNS (public addresses only, README "Webhooks"), which
no schema can state. The fuzzer's URLs name hosts that resolve nowhere (and a sandbox has no
DNS), so a schema-valid URL is pointed at the one host the fuzzed server allows
(``WEBHOOK_ALLOWED_HOSTS``), keeping its scheme, path and query. URLs that break the documented
pattern, and every case generated to violate the schema, are sent as generated, so the
server's refusal of them is still checked.

Likewise an ``image`` or ``mask`` is documented as a string (JSON: base64 or a ``data:`` URI)
or a file part of an image type (multipart); that it decodes to a picture is the server's check
on the content. Generated values become one 1x1 PNG (schemathesis's own PNG sample; for an
OpenAI edit's mask, a transparent one), so requests with images reach the model; values of
other types are sent as generated.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from schemathesis.transport.serialization import Binary

from inference.http.forms import INTEGER, NUMBER

#: The host the fuzzed server allows: ``.invalid`` never resolves, so no delivery leaves.
WEBHOOK_HOST = "hooks.invalid"
#: A 1x1 grey PNG, base64: what a JSON image field carries.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
#: A 1x1 fully transparent PNG: an OpenAI edit's mask marks the area to repaint by its alpha.
TRANSPARENT_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNgYGBg"
    "AAAABQABeqhXUAAAAABJRU5ErkJggg=="
)
_URL = re.compile(r"^(https?://)[^\s/?#]+(.*)$", re.DOTALL)


def allowed(url: Any) -> Any:
    """``url`` with its authority replaced by ``WEBHOOK_HOST`` if it is a documented webhook."""
    if isinstance(url, str) and (found := _URL.match(url)):
        return f"{found[1]}{WEBHOOK_HOST}{found[2]}"
    return url


def with_pictures(request: Any) -> None:
    """String ``image``/``mask`` fields of a JSON request replaced by ``PNG``, in place."""
    if isinstance(request, dict):
        for key in ("image", "mask"):
            if isinstance(request.get(key), str):
                request[key] = PNG


def body_conforms(case: Any) -> bool | None:
    """Whether the case's body conforms to the operation's documented schema, as schemathesis's
    own validator for that body judges it; None when the operation documents no such body.

    The fuzzer's labels are not trusted for this: it has labelled unmutated bodies negative
    (its negative generator falling back to valid data, in multipart and coverage cases) and
    schema-violating ones positive (``{"strength": {}}``, drawn from an ``if`` subschema). A
    multipart body is judged as it is sent (``as_sent``).
    """
    body = case.body
    if not isinstance(body, dict):
        return None
    media = (case.media_type or "").split(";")[0].strip()
    for alternative in case.operation.body:
        if alternative.media_type == media:
            if media.startswith("multipart/"):
                body = as_sent(body, alternative.form_properties)
            return bool(alternative.is_valid(body))
    return None


def as_sent(body: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """A generated multipart body as the server reads what goes on the wire.

    A part is text: schemathesis writes ``None``, booleans, objects and arrays in their JSON
    spelling, numbers with ``str``, a list as one part per item. The server reads a blank part
    as a field not sent and a number or boolean field's text as the value it spells; a file
    part is the string its schema says it is.
    """
    sent: dict[str, Any] = {}
    for name, value in body.items():
        if properties.get(name, {}).get("format") == "binary" and not isinstance(value, Binary):
            sent[name] = value  # sent as a file of its JSON text: judged as generated
            continue
        if isinstance(value, list) and len(value) != 1:
            if value:
                sent[name] = value  # repeated parts: refused as such, as the schema refuses it
            continue
        value = value[0] if isinstance(value, list) else value
        if isinstance(value, Binary):
            sent[name] = "file"
            continue
        text = value if isinstance(value, str) else _wire_text(value)
        if text != "":
            sent[name] = _read_as(text, properties.get(name, {}))
    return sent


def _wire_text(value: Any) -> str:
    return (
        str(value)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else (json.dumps(value))
    )


def _read_as(text: str, schema: dict[str, Any]) -> Any:
    """Form text as the server types it for a field of ``schema`` (inference.http.forms)."""
    kinds = {schema.get("type")} | {branch.get("type") for branch in schema.get("anyOf", [])}
    if "integer" in kinds and INTEGER.match(text):
        return int(text)
    if "number" in kinds and NUMBER.match(text):
        return float(text)
    if "boolean" in kinds and text in ("true", "false"):
        return text == "true"
    return text


def is_negative(case: Any) -> bool:
    """Whether the case violates the document: its body (judged by ``body_conforms``) or,
    as labelled, any other component (a header, a path or query parameter)."""
    meta = case.meta
    if meta is None:
        return False
    others = any(
        part.mode.is_negative
        for location, part in meta.components.items()
        if location != ParameterLocation.BODY
    )
    conforms = body_conforms(case)
    if conforms is None:
        return others or meta.generation.mode.is_negative
    return others or not conforms


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    body = case.body
    if is_negative(case) or not isinstance(body, dict):
        return  # a schema-violating case is sent as generated: its refusal is what is checked
    for key in ("webhook", "webhook_completed"):
        if key in body:
            body[key] = allowed(body[key])
    if (case.media_type or "").startswith("multipart/"):
        for key in ("image", "mask"):
            value = body.get(key)
            alpha = key == "mask" and case.path == "/v1/images/edits"
            picture = base64.b64decode(TRANSPARENT_PNG if alpha else PNG)
            if isinstance(value, Binary):
                value.data = picture  # in place: the body stays the one schemathesis made
            elif isinstance(value, str):  # a file part of that text: a string, as documented
                body[key] = Binary(data=picture)
        return
    with_pictures(body)
    with_pictures(body.get("input"))
    for request in body.get("requests", []) if isinstance(body.get("requests"), list) else []:
        with_pictures(request)


@schemathesis.hook
def after_call(ctx: Any, case: Any, response: Any) -> None:
    """Label the case by the document's judgement (``is_negative``) before the checks run."""
    meta = case.meta
    if meta is None:
        return
    mode = GenerationMode.NEGATIVE if is_negative(case) else GenerationMode.POSITIVE
    meta.generation.mode = mode
    body = meta.components.get(ParameterLocation.BODY)
    if body is not None:
        body.mode = mode if body_conforms(case) is not None else body.mode
