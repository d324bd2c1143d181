"""Response bodies that stream a prediction's outputs from the record's own bytes.

A finished prediction's outputs are megabytes (four 1024x1024 PNGs are ~12 MB, ~16 MB as data:
URIs). Building a JSON document or an event per reader copies them per connection: 100 idle
streams of one prediction took the server from 0.5 to 2.4 GB. Here a body is a list of parts,
text and the record's ``OutputFile`` objects (shared by every copy of the record), and each
output is base64-encoded slice by slice as the connection takes it, so a reader holds one slice,
never a copy of the outputs. Encoding a slice is cheaper than the copy it replaces, and caching
the encoded URIs would add 4/3 of every image to the store outside PREDICTIONS_MAX_BYTES.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from inference.predictions.record import OutputFile

#: Raw bytes per slice: a multiple of 3, so each slice encodes to whole base64 quads (no
#: padding inside the URI) and to 64 KiB, the size of a transport's write buffer.
SLICE_BYTES = 48 * 1024

#: An envelope function called with the function that writes each output's URI.
Render = Callable[[Callable[[OutputFile], str]], dict[str, Any]]


def uri_prefix(output: OutputFile) -> str:
    return f"data:{output.media_type};base64,"


def uri_slices(output: OutputFile) -> Iterator[bytes]:
    """``envelopes.data_uri(output)`` as bytes, a slice at a time."""
    yield uri_prefix(output).encode("ascii")
    yield from slices(output.data, encode=True)


def uri_length(output: OutputFile) -> int:
    return len(uri_prefix(output)) + 4 * -(-len(output.data) // 3)


def slices(data: bytes, *, encode: bool = False) -> Iterator[bytes]:
    """``data`` (base64-encoded when ``encode``) in ``SLICE_BYTES`` pieces, without a copy of
    the whole."""
    view = memoryview(data)
    for start in range(0, len(view), SLICE_BYTES):
        piece = view[start : start + SLICE_BYTES]
        yield base64.b64encode(piece) if encode else piece.tobytes()


@dataclass(frozen=True)
class SharedBody:
    """A body of text parts and outputs (streamed as their data: URIs) with a known length."""

    parts: tuple[bytes | OutputFile, ...]

    @property
    def length(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else uri_length(p) for p in self.parts)

    def chunks(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                yield from uri_slices(part)


def json_body(render: Render) -> SharedBody:
    """``render``'s envelope as JSON, byte for byte what starlette's ``JSONResponse`` sends,
    with each output's URI left as a part to stream.

    The envelope is rendered with a random marker in each URI's place (128 random bits, so no
    input a client sent can contain one); the JSON text is then cut at the markers. A data: URI
    needs no escaping in JSON, so the URI's bytes go between the quotes as they are.
    """
    nonce = secrets.token_hex(16)
    outputs: list[OutputFile] = []

    def marker(output: OutputFile) -> str:
        outputs.append(output)
        return f"<{nonce}:{len(outputs) - 1}>"

    text = json.dumps(
        render(marker), ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    )
    parts: list[bytes | OutputFile] = []
    for i, output in enumerate(outputs):
        before, _, text = text.partition(f"<{nonce}:{i}>")
        parts += [before.encode("utf-8"), output]
    parts.append(text.encode("utf-8"))
    return SharedBody(tuple(parts))
