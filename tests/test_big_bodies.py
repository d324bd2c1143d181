"""Large JSON bodies are parsed off the loop and large inputs echoed from JSON written once,
with every answer byte for byte what the framework's own path gives (issue 21, item 2).

A body over ``THREAD_SCAN_BYTES`` is parsed in a worker thread (orjson, then ``json.loads``
for whatever orjson refuses); below it Starlette parses it on the loop. Each body here is sent
twice, once down each path (the threshold moved around it), and the answers must match: values,
422 shapes and their messages, for every create route of Replicate and Cog.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inference.http import bodies
from inference.http.app import create_app
from inference.predictions.bodies import (
    KEEP_INPUT_JSON_BYTES,
    dumps,
    input_json,
    json_body,
    keep_input_json,
    unwritable,
)
from inference.predictions.envelopes import replicate_object
from inference.predictions.record import Prediction
from inference.schema import decode_base64
from inference.settings import Settings
from tests.servers import serving_in_thread

SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 7}
#: Padding that takes a body over any threshold without changing what it means.
PAD = "p" * 300_000

#: Documents json.loads and orjson disagree on, or that only one of them accepts.
TRICKY = [
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'{"a": "\\ud800 lone surrogate"}',
    b'{"a": 123456789012345678901234567890}',
    b'{"a": 1e400, "b": -0.0, "c": 1.5e-7}',
    b'{"a": 1, "a": 2}',
    b'\xef\xbb\xbf{"bom": 1}',
    '{"utf16": 1}'.encode("utf-16"),
    b'{"a": "\xff not utf-8"}',
    b'{"a": 1} trailing',
    b'{"a": [1, 2,]}',
    b'{"a": "\x01 raw control"}',
    b'{"a": "' + b"9" * 5000 + b'"}',
    b'{"a": ' + b"9" * 5000 + b"}",
    b"",
]


def outcome(parse: Any, body: bytes) -> tuple[str, str]:
    """What parsing ``body`` gives, comparable across parsers (NaN is not equal to itself)."""
    try:
        return "value", repr(parse(body))
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("body", TRICKY, ids=range(len(TRICKY)))
def test_the_fast_parser_gives_what_json_loads_gives(body: bytes) -> None:
    assert outcome(bodies.parse_json, body) == outcome(json.loads, body)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serving_in_thread(create_app(Settings(max_wait_ms=0))) as url:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield url


def both_paths(monkeypatch: pytest.MonkeyPatch, send: Any) -> tuple[httpx.Response, httpx.Response]:
    """``send()`` with the body parsed on the loop by Starlette, then in a worker thread."""
    monkeypatch.setattr(bodies, "THREAD_SCAN_BYTES", 10**9)
    on_loop = send()
    monkeypatch.setattr(bodies, "THREAD_SCAN_BYTES", 0)
    threaded = send()
    return on_loop, threaded


BAD_BODIES = {
    "malformed": b'{"input": {"prompt": "' + PAD.encode() + b'"',
    "not an object": json.dumps([PAD]).encode(),
    "bad field": json.dumps({"input": {**SMALL, "steps": "many", "pad": PAD}}).encode(),
    "bad envelope": json.dumps({"input": {"pad": PAD}, "webhook_events_filter": "x"}).encode(),
    "lone surrogate": b'{"input": {"prompt": "\\udc00", "pad": "' + PAD.encode() + b'"}, "x": [}',
    "huge integer": b'{"input": {"seed": 1' + b"0" * 5000 + b', "pad": "' + PAD.encode() + b'"}}',
    "not utf-8": b'{"input": {"prompt": "\xff", "pad": "' + PAD.encode() + b'"}}',
}
CREATE_ROUTES = [("post", "/v1/predictions"), ("post", "/predictions"), ("put", "/predictions/p1")]


@pytest.mark.parametrize("route", CREATE_ROUTES, ids=[" ".join(r) for r in CREATE_ROUTES])
@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_errors_are_the_same_down_both_paths(
    base: str, monkeypatch: pytest.MonkeyPatch, route: tuple[str, str], name: str
) -> None:
    method, path = route
    headers = {"Content-Type": "application/json"}

    def send() -> httpx.Response:
        return httpx.request(method, base + path, content=BAD_BODIES[name], headers=headers)

    on_loop, threaded = both_paths(monkeypatch, send)
    assert on_loop.status_code in (400, 422), on_loop.text[:300]
    assert (threaded.status_code, threaded.content) == (on_loop.status_code, on_loop.content)


def test_a_large_input_is_echoed_byte_for_byte(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicate echoes the input: from the JSON written once at creation, the same bytes as
    the input written with each answer."""
    given = {"input": {**SMALL, "prompt": 'é \u2028 " \\ \n' * 20, "pad": PAD}}

    def create() -> httpx.Response:
        return httpx.post(f"{base}/v1/predictions", json=given, headers={"Prefer": "wait"})

    on_loop, threaded = both_paths(monkeypatch, create)
    assert on_loop.status_code == threaded.status_code == 201
    echoed = [answer.json()["input"] for answer in (on_loop, threaded)]
    assert echoed[0] == echoed[1] == given["input"]
    one = threaded.json()
    again = httpx.get(f"{base}/v1/predictions/{one['id']}")
    assert dumps(one).encode() == again.content  # key order and escapes included
    listed = httpx.get(f"{base}/v1/predictions").json()["results"]
    assert [p["input"] for p in listed if p["id"] == one["id"]] == [given["input"]]


def test_the_kept_json_is_what_an_answer_would_write_and_is_counted() -> None:
    prediction = Prediction(id="p", protocol="replicate", input={"a": "é\n" * 10, "n": 1.5e-7})
    plain = b"".join(json_body(lambda mark: replicate_object(prediction, uri=mark)).chunks())
    size = prediction.size_bytes
    prediction.input_json = dumps(prediction.input).encode()
    kept = json_body(lambda mark: replicate_object(prediction, uri=mark, text=mark))
    assert b"".join(kept.chunks()) == plain and kept.length == len(plain)
    assert prediction.size_bytes == size + len(prediction.input_json)
    assert "input_json" not in prediction.to_dict()
    assert Prediction.from_dict(prediction.to_dict()).input_json is None


def test_only_large_inputs_keep_their_json() -> None:
    """Small predictions hold nothing more than before; an input JSON cannot carry (NaN) keeps
    none, so its answers fail as they did."""

    def kept(given: dict[str, Any]) -> bytes | None:
        prediction = Prediction(id="p", protocol="replicate", input=given)
        asyncio.run(keep_input_json(prediction))
        return prediction.input_json

    assert kept({"pad": "p" * (KEEP_INPUT_JSON_BYTES - 20)}) is None
    assert kept({"pad": PAD}) == dumps({"pad": PAD}).encode()
    assert kept({"pad": PAD, "x": float("nan")}) is None


EVERY_CHARACTER = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@pytest.mark.parametrize(
    "value",
    [
        {"text": EVERY_CHARACTER, "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1], "x": None},
        {"nested": [{"a": [True, False, {}, []]}], "": ""},
        {"floats": [1e-7, 1e16, 0.1, -0.0, 1.5], "big": 2**64, "small": -(2**63) - 1},
    ],
    ids=["strings and integers", "containers", "floats and wide integers"],
)
def test_the_kept_input_json_is_what_dumps_writes(value: dict[str, Any]) -> None:
    assert input_json(value) == dumps(value).encode("utf-8")


def test_an_input_json_cannot_carry_keeps_nothing() -> None:
    assert input_json({"x": float("inf")}) is None
    assert input_json({"x": "\ud800"}) is None


def structural(text: bytes) -> list[bytes]:
    """The structural tokens a regex reads when it skips each string whole (the scan before
    ``json_structure``): the reference the fast scan must agree with."""
    tokens = re.finditer(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{},"]', text)
    return [t.group() if t.group()[:1] != b'"' or t.group() == b'"' else b'""' for t in tokens]


def test_emptying_strings_keeps_the_structure_a_regex_reads() -> None:
    rng = random.Random(7)
    alphabet = ['"', "\\", "a", "[", "]", "{", "}", ",", ":", "\n", "é"]
    bodies_seen = [
        json.dumps({"k": "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))})
        .encode()
        .join([b"[", b"]"])
        for _ in range(300)
    ]
    bodies_seen += [b'{"a": "\\\\"}', b'{"a": "\\\\\\"", "b": [1]}', b'["x", "y', b'"\\', b""]
    for body in bodies_seen:
        assert structural(bodies.json_structure(body)) == structural(body), body


def test_the_fast_base64_decode_agrees_with_the_standard_one_on_every_short_input() -> None:
    """Every string of up to 6 characters from base64's alphabet, its padding, whitespace and
    characters outside it: the same bytes, or an error from both."""

    def standard(text: str) -> bytes | str:
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return "error"

    def fast(text: str) -> bytes | str:
        try:
            return decode_base64(text)
        except (binascii.Error, ValueError):
            return "error"

    texts = ["".join(t) for n in range(7) for t in itertools.product("AQ=+ -", repeat=n)]
    texts += ["QQ==QQ==", "QUJD\nREVG", " QUJD ", "QUJD=", "é"]
    assert [fast(t) for t in texts] == [standard(t) for t in texts]


@pytest.mark.parametrize(
    "value",
    [b"NaN", b"-Infinity", b'"\\ud800"', b"1e400"],
    ids=["nan", "inf", "surrogate", "1e400"],
)
@pytest.mark.parametrize("pad", ["", PAD], ids=["small", "large"])
def test_an_input_json_cannot_echo_is_refused_not_a_500(base: str, value: bytes, pad: str) -> None:
    """Replicate echoes the input in every answer (and the list): a value JSON cannot carry is
    a 422 naming it, before any prediction is kept, not a 500 on each read of it."""
    body = b'{"input": {"steps": 2, "width": 64, "height": 64, "odd": ' + value
    body += b', "pad": "' + pad.encode() + b'"}}'
    before = httpx.get(f"{base}/v1/predictions").json()["results"]
    answer = httpx.post(
        f"{base}/v1/predictions", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text[:300]
    assert "input.odd" in answer.text
    listed = httpx.get(f"{base}/v1/predictions")
    assert listed.status_code == 200 and listed.json()["results"] == before


def test_unwritable_finds_the_first_value_json_cannot_carry() -> None:
    assert unwritable({"a": [1.5, "é", {"b": None}], "c": 2**70}) is None
    assert unwritable({"a": [1, {"b": float("-inf")}]}) == "input.a[1].b"
    assert unwritable({"a": "ok", "b": "x\udc00"}) == "input.b"
    assert unwritable({"\ud800": 1}) == "input"
