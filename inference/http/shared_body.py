"""Responses whose large parts are streamed from one shared copy, with a known length.

A prediction's GET answers megabytes of data: URIs; built as one string per request, every
concurrent reader (and every slow one, whose unsent bytes wait in its transport) held its own
copy. These responses send slices of the record's bytes instead (``predictions.bodies``), with
``Content-Length`` set as ``JSONResponse`` sets it, so a client sees the same bytes and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

from starlette.responses import StreamingResponse

from inference.predictions.bodies import Render, json_body, slices


class SharedBodyResponse(StreamingResponse):
    """``length`` bytes sent as ``chunks``; slices are made on the event loop (each is a few
    microseconds of work), not on the thread pool that encodes results."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        length: int,
        *,
        status_code: int = 200,
        media_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            _on_the_loop(chunks),
            status_code=status_code,
            media_type=media_type,
            headers={"content-length": str(length), **(headers or {})},
        )


async def _on_the_loop(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def shared_json(render: Render, status_code: int = 200) -> SharedBodyResponse:
    """``JSONResponse(render(data_uri), status_code)``, its outputs streamed from the record."""
    body = json_body(render)
    return SharedBodyResponse(body.chunks(), body.length, status_code=status_code)


def shared_file(data: bytes, media_type: str) -> SharedBodyResponse:
    """``Response(data, media_type=media_type)``, sent a slice at a time."""
    return SharedBodyResponse(slices(data), len(data), media_type=media_type)
