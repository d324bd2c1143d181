"""A ceiling on the work a JSON body can cause before any parser or validator sees it.

A 25 MB body of a million unknown keys is cheap to send and dear to answer: the JSON parser
builds a million objects and the schema a million errors, all holding the GIL, so /health
froze for a minute. The body's structure is therefore counted first, by a scan that skips
strings at C speed (a 10 MB base64 image is one match) and builds nothing: at most
``MAX_JSON_VALUES`` values (array items and object members, over the whole body) and
``MAX_JSON_DEPTH`` levels of nesting. It stops at the first value over, and a large body is
scanned in a worker thread, so the loop keeps answering while it runs. Every JSON route of the
native and the predictions protocols goes through ``BoundedBodyRoute``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from inference.errors import InvalidRequest

#: Far above any request (/predict/batch's 256 requests of every field is about 8,000).
MAX_JSON_VALUES = 16_384
#: A request nests five levels (batch, requests, item, loras, adapter).
MAX_JSON_DEPTH = 64
#: Larger bodies are scanned in a worker thread, off the loop.
THREAD_SCAN_BYTES = 256 * 1024
#: A string (skipped whole; possessive, so a scan never backtracks), or one structural
#: character; a lone quote is an unterminated string.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{},"]')


def check_json_shape(body: bytes) -> None:
    """``InvalidRequest`` if ``body`` holds more values or nests deeper than a request can.

    Only a bound: malformed JSON passes here and is refused by the parser with its own message.
    """
    values = depth = 0
    for match in _TOKENS.finditer(body):
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


async def check_json_body(request: Request) -> None:
    """Read the body (Starlette keeps it for the route) and bound its shape, off the loop
    when it is large."""
    if request.method not in ("POST", "PUT", "PATCH") or not is_json(request):
        return
    body = await request.body()
    if len(body) > THREAD_SCAN_BYTES:
        await asyncio.to_thread(check_json_shape, body)
    else:
        check_json_shape(body)


class BoundedBodyRoute(APIRoute):
    """A route whose JSON body is bounded by ``check_json_body`` before FastAPI parses it."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            await check_json_body(request)
            return await handler(request)

        return handle
