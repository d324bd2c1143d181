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
on the content. Generated values become one 1x1 PNG (schemathesis's own PNG sample), so requests
with images reach the model; values of other types are sent as generated.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import schemathesis
from schemathesis.generation.modes import GenerationMode
from schemathesis.transport.serialization import Binary

#: The host the fuzzed server allows: ``.invalid`` never resolves, so no delivery leaves.
WEBHOOK_HOST = "hooks.invalid"
#: A 1x1 grey PNG, base64: what a JSON image field carries.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
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


def unmutated_negative(meta: Any) -> bool:
    """A case labelled negative that carries no mutation, which schemathesis itself describes
    as a "Positive test case" (its negative generator fell back to valid data; seen for a
    multipart body in the fuzzing phase): it is checked as the valid request it is."""
    data = meta.phase.data
    return (
        meta.generation.mode.is_negative
        and getattr(data, "mutations", None) == ()
        and getattr(data, "description", None) == "Positive test case"
    )


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    body = case.body
    meta = case.meta
    negative = meta is not None and (
        meta.generation.mode.is_negative
        or any(part.mode.is_negative for part in meta.components.values())
    )
    if negative or not isinstance(body, dict):
        return  # a schema-violating case is sent as generated: its refusal is what is checked
    for key in ("webhook", "webhook_completed"):
        if key in body:
            body[key] = allowed(body[key])
    if (case.media_type or "").startswith("multipart/"):
        for key in ("image", "mask"):
            value = body.get(key)
            if isinstance(value, Binary):
                # In place: schemathesis re-judges a body it sees edited, and it judges every
                # body with a file part schema-violating, which this positive case is not.
                value.data = base64.b64decode(PNG)
        return
    with_pictures(body)
    with_pictures(body.get("input"))
    for request in body.get("requests", []) if isinstance(body.get("requests"), list) else []:
        with_pictures(request)


@schemathesis.hook
def after_call(ctx: Any, case: Any, response: Any) -> None:
    """Label an unmutated "negative" case positive before the checks judge it."""
    meta = case.meta
    if meta is not None and unmutated_negative(meta):
        meta.generation.mode = GenerationMode.POSITIVE
        for part in meta.components.values():
            part.mode = GenerationMode.POSITIVE
