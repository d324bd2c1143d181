"""Response bodies that stream a prediction's outputs from the record's own bytes.

A finished prediction's outputs are megabytes (four 1024x1024 PNGs are ~12 MB, ~16 MB as data:
URIs). Building a JSON document or an event per reader copies them per connection: 100 idle
streams of one prediction took the server from 0.5 to 2.4 GB. Here a body is a list of parts,
text and the record's ``OutputFile`` objects (shared by every copy of the record), and each
output is base64-encoded slice by slice as the connection takes it, so a reader holds one slice,
never a copy of the outputs. Encoding a slice is cheaper than the copy it replaces, and caching
the encoded URIs would add 4/3 of every image to the store outside PREDICTIONS_MAX_BYTES.

A large input, which Replicate's answers echo, is the other way round: its JSON is written once,
in a worker thread when the prediction is created (``keep_input_json``), kept on the record
(and counted in its size) and placed into each answer as it is, so no answer writes megabytes
of JSON on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from inference.predictions.record import OutputFile, Prediction, json_size

#: Raw bytes per slice: a multiple of 3, so each slice encodes to whole base64 quads (no
#: padding inside the URI) and to 64 KiB, the size of a transport's write buffer.
SLICE_BYTES = 48 * 1024

#: Inputs larger than this (as JSON) have their JSON written off the loop and kept; smaller
#: ones are written with each answer, cheaper than a thread hop and the copy.
KEEP_INPUT_JSON_BYTES = 256 * 1024
#: The marker ``json_body`` hands an envelope: for an output (its URI's place) or for JSON text
#: already written (``Prediction.input_json``: the value's place).
Marker = Callable[[OutputFile | bytes], str]
#: An envelope function called with the marker function.
Render = Callable[[Marker], dict[str, Any]]


def dumps(value: Any) -> str:
    """JSON as starlette's ``JSONResponse`` writes it (compact, UTF-8 as it is, no NaN)."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    )


def input_json(value: dict[str, Any]) -> bytes | None:
    """``value`` as an answer writes it; None where it cannot be (NaN, a lone surrogate), so
    the answer fails as it would have.

    orjson writes the same bytes as ``dumps`` for strings, 64-bit integers, booleans, null and
    containers (a test compares every code point), in a seventh of the time: ``json.dumps``
    of a 9 MB string is one call that holds the GIL for ~100 ms, stalling the event loop from
    its worker thread. Floats (orjson spells ``1e-07`` as ``1e-7``) and wider integers go to
    ``dumps``.
    """
    try:
        if orjson_writes_alike(value):
            return orjson.dumps(value)
        return dumps(value).encode("utf-8")
    except (ValueError, orjson.JSONEncodeError):
        return None


def orjson_writes_alike(value: Any) -> bool:
    """Whether ``value`` holds only what orjson writes as ``dumps`` does."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and orjson_writes_alike(v) for k, v in value.items())
    if isinstance(value, list):
        return all(orjson_writes_alike(item) for item in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and -(2**63) <= value < 2**64


def unwritable(value: Any, where: str = "input") -> str | None:
    """Where in ``value`` the first value JSON cannot carry is (NaN, an infinity, a lone
    surrogate in a string or a key: ``json.loads`` reads them, an answer cannot write them),
    as ``input.<key>...``; None where there is none. Long ASCII strings cost a memory scan."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else where
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodes(str(key)):
                return where
            if (found := unwritable(item, f"{where}.{key}")) is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (found := unwritable(item, f"{where}[{i}]")) is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def keep_input_json(prediction: Prediction) -> None:
    """Write a large input's JSON once, in a worker thread, for every answer to echo."""
    if json_size(prediction.input) > KEEP_INPUT_JSON_BYTES:
        prediction.input_json = await asyncio.to_thread(input_json, prediction.input)


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
                yield from slices(part)
            else:
                yield from uri_slices(part)


def json_body(render: Render) -> SharedBody:
    """``render``'s envelope as JSON, byte for byte what starlette's ``JSONResponse`` sends,
    with each output's URI left as a part to stream and JSON text already written put in as it is.

    The envelope is rendered with a random marker in each part's place (128 random bits, so no
    input a client sent can contain one); the JSON text is then cut at the markers. A data: URI
    needs no escaping in JSON, so the URI's bytes go between the quotes as they are; JSON text
    replaces the quoted marker.
    """
    nonce = secrets.token_hex(16)
    marked: list[OutputFile | bytes] = []

    def marker(part: OutputFile | bytes) -> str:
        marked.append(part)
        return f"<{nonce}:{len(marked) - 1}>"

    text = dumps(render(marker))
    parts: list[bytes | OutputFile] = []
    for i, part in enumerate(marked):
        if isinstance(part, OutputFile):
            before, _, text = text.partition(f"<{nonce}:{i}>")
        else:
            before, _, text = text.partition(f'"<{nonce}:{i}>"')
        parts += [before.encode("utf-8"), part]
    parts.append(text.encode("utf-8"))
    return SharedBody(tuple(parts))
