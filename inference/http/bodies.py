"""A ceiling on the work a JSON body can cause before any parser or validator sees it.

A 25 MB body of a million unknown keys is cheap to send and dear to answer: the JSON parser
builds a million objects and the schema a million errors, all holding the GIL, so /health
froze for a minute. The body's structure is therefore counted first, by a scan that empties
strings at memory speed (``json_structure``) and builds nothing: at most
``MAX_JSON_VALUES`` values (array items and object members, over the whole body) and
``MAX_JSON_DEPTH`` levels of nesting. It stops at the first value over, and a large body is
scanned in a worker thread, so the loop keeps answering while it runs. Every JSON route of the
native and the predictions protocols goes through ``BoundedBodyRoute``.

A large body is also parsed in that thread: Starlette's ``Request.json()``, which FastAPI calls
for a route's body, runs ``json.loads`` on the loop, and a 7 MB image as a data: URI (9.3 MB of
JSON) held it for ~30 ms. orjson parses it in a fraction of that; whatever orjson refuses is
parsed by ``json.loads`` (what Starlette would have done), so values and error messages are the
ones FastAPI's own parse gives.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from inference.errors import InvalidRequest

#: Far above any request (/predict/batch's 256 requests of every field is about 8,000).
MAX_JSON_VALUES = 16_384
#: A request nests five levels (batch, requests, item, loras, adapter).
MAX_JSON_DEPTH = 64
#: Larger bodies are scanned and parsed in a worker thread, off the loop; smaller ones cost
#: less than the hop to a thread.
THREAD_SCAN_BYTES = 256 * 1024
#: A string (skipped whole; possessive, so a scan never backtracks), or one structural
#: character; a lone quote is an unterminated string.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{},"]')
#: 19 digits: a number orjson may read differently from ``json.loads`` (it keeps integers in
#: 64 bits and turns larger ones into floats).
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def json_structure(body: bytes) -> bytes:
    """``body`` with every string emptied to ``""``: what the bounds and the number check read.

    A regex that skips a 9 MB string still visits each byte in one call (~100 ms holding the
    GIL, which stalls the event loop as surely as running there); ``bytes.find`` of a quote
    runs at memory speed, and the loop between finds lets other threads in. A quote after an
    odd run of backslashes is escaped. A string that never ends keeps its opening quote alone,
    which the scan reads as malformed JSON.
    """
    pieces: list[bytes] = []
    outside = 0  # where the text outside strings resumes
    while (opening := body.find(b'"', outside)) >= 0:
        closing = body.find(b'"', opening + 1)
        while closing >= 0 and _backslashes_before(body, closing) % 2:
            closing = body.find(b'"', closing + 1)
        if closing < 0:
            pieces.append(body[outside : opening + 1])
            return b"".join(pieces)
        pieces.append(body[outside:opening] + b'""')
        outside = closing + 1
    pieces.append(body[outside:])
    return b"".join(pieces)


def _backslashes_before(body: bytes, at: int) -> int:
    count = 0
    while body[at - count - 1] == 0x5C:  # a string's opening quote ends the run
        count += 1
    return count


def check_json_shape(body: bytes) -> None:
    """``InvalidRequest`` if ``body`` holds more values or nests deeper than a request can."""
    check_structure(json_structure(body))


def check_structure(structure: bytes) -> None:
    """``check_json_shape`` of a body's ``json_structure``.

    Only a bound: malformed JSON passes here and is refused by the parser with its own message.
    """
    values = depth = 0
    for match in _TOKENS.finditer(structure):
        token = match.group()
        if token == b'"':
            return  # no string ends after it: malformed, which the parser says
        if token in (b"[", b"{"):
            depth += 1
            values += 1
            if depth > MAX_JSON_DEPTH:
                raise InvalidRequest(
                    "body",
                    f"the body nests JSON more than {MAX_JSON_DEPTH} levels deep; send a flat "
                    "JSON object of request fields",
                )
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b",":
            values += 1
        if values > MAX_JSON_VALUES:
            raise InvalidRequest(
                "body",
                f"the body holds more than {MAX_JSON_VALUES} JSON values; a request has a few "
                "dozen fields: send only the request's fields",
            )


def is_json(request: Request) -> bool:
    """JSON, or no content type at all: some FastAPI releases in range parse such a body as
    JSON, so it is bounded like one."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


def parse_json(body: bytes, structure: bytes | None = None) -> Any:
    """``json.loads(body)``'s value or error, faster where orjson agrees: whatever orjson
    refuses (NaN, lone surrogates, UTF-16, malformed JSON) or reads otherwise (integers over 64
    bits: 19 digits in the body's ``structure``) goes to ``json.loads``, which parses it or
    raises the error FastAPI answers with."""
    structure = json_structure(body) if structure is None else structure
    if _LONG_NUMBER.search(structure):
        return json.loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def scan_and_parse(body: bytes) -> tuple[Any, Exception | None]:
    """``check_json_shape`` (its ``InvalidRequest`` raised), then the parsed body or the
    parser's error, kept for ``ParsedJsonRequest.json`` to raise where FastAPI expects it."""
    structure = json_structure(body)
    check_structure(structure)
    try:
        return parse_json(body, structure), None
    except Exception as exc:  # any parse error: FastAPI maps each kind itself
        return None, exc


class ParsedJsonRequest(Request):
    """A request whose JSON body may already be parsed off the loop (``check_json_body``)."""

    parsed: tuple[Any, Exception | None] | None = None

    async def json(self) -> Any:
        if self.parsed is None:
            return await super().json()
        value, error = self.parsed
        if error is not None:
            raise error
        return value


async def check_json_body(request: ParsedJsonRequest, *, parse: bool) -> None:
    """Read the body (Starlette keeps it for the route) and bound its shape; a large one is
    scanned, and parsed when ``parse`` (FastAPI will ask for it), in a worker thread."""
    if request.method not in ("POST", "PUT", "PATCH") or not is_json(request):
        return
    body = await request.body()
    if len(body) <= THREAD_SCAN_BYTES:
        check_json_shape(body)
    elif parse:
        request.parsed = await asyncio.to_thread(scan_and_parse, body)
    else:
        await asyncio.to_thread(check_json_shape, body)


class BoundedBodyRoute(APIRoute):
    """A route whose JSON body is bounded by ``check_json_body`` before FastAPI reads it, and
    parsed off the loop when it is large (FastAPI's pattern for a custom ``Request`` class). A
    route that reads its body itself (``/predict``: JSON or a form) is only bounded."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        parse = self.body_field is not None

        async def handle(request: Request) -> Response:
            request = ParsedJsonRequest(request.scope, request.receive)
            await check_json_body(request, parse=parse)
            return await handler(request)

        return handle
