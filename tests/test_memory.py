"""Memory you can predict: readers share one copy of a prediction's outputs, /metrics shows each
store's size, and the server's RSS stays under the ceiling the README states.

The RSS tests run ``python -m inference serve`` as a subprocess and read its VmRSS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse

from inference.images import DecodeLimits
from inference.predictions.bodies import SLICE_BYTES, json_body, uri_length, uri_slices
from inference.predictions.envelopes import cog_envelope, data_uri, replicate_object
from inference.predictions.events import encode, stream
from inference.predictions.record import OutputFile, Prediction, json_size
from inference.settings import Settings
from tests.servers import inference_process
from tests.test_faults import rss_kib

QUIET = {"UI": "false", "LOG_LEVEL": "warning"}
#: A prediction whose outputs are ~12 MB of PNG (~16 MB as data: URIs): the issue's case.
LARGE = {"width": 1024, "height": 1024, "steps": 1, "num_outputs": 4, "seed": 1}


def outputs(*sizes: int) -> list[OutputFile]:
    return [
        OutputFile(f"out-{i}.png", "image/png", bytes(range(256)) * (n // 256) + b"x" * (n % 256))
        for i, n in enumerate(sizes)
    ]


def finished(files: list[OutputFile], **fields: Any) -> Prediction:
    prediction = Prediction(
        id="p1", protocol="replicate", input={"prompt": 'ünïcode <"x"> \u2028', "n": 1.5}, **fields
    )
    prediction.outputs, prediction.status, prediction.completed_at = files, "succeeded", 2.0
    prediction.log("a log line")
    return prediction


# -- the shared copy, byte for byte -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, SLICE_BYTES - 1, SLICE_BYTES, 3 * SLICE_BYTES + 2])
def test_a_uri_streamed_in_slices_is_the_whole_uri(size: int) -> None:
    (output,) = outputs(size)
    streamed = b"".join(uri_slices(output))
    assert streamed == data_uri(output).encode() and len(streamed) == uri_length(output)
    assert all(len(piece) <= 4 * SLICE_BYTES // 3 for piece in uri_slices(output))


@pytest.mark.parametrize("count", [0, 1, 11])
@pytest.mark.parametrize("protocol", ["replicate", "cog"])
def test_a_shared_body_is_what_json_response_sends(count: int, protocol: str) -> None:
    prediction = finished(outputs(*[1000 * i + 7 for i in range(count)]))
    envelope = replicate_object if protocol == "replicate" else cog_envelope
    body = json_body(lambda uri: envelope(prediction, uri=uri))
    expected = JSONResponse(envelope(prediction)).body
    assert b"".join(body.chunks()) == expected and body.length == len(expected)
    # the outputs are parts, not copies: one per output, each the record's own object
    shared = [part for part in body.parts if isinstance(part, OutputFile)]
    assert len(shared) == count
    assert all(a is b for a, b in zip(shared, prediction.outputs or [], strict=True))


def test_an_input_that_looks_like_a_marker_stays_text() -> None:
    prediction = finished(outputs(10))
    prediction.input = {"prompt": "<0123456789abcdef0123456789abcdef:0>"}
    body = json_body(lambda uri: replicate_object(prediction, uri=uri))
    assert json.loads(b"".join(body.chunks()))["input"] == prediction.input


class OneDone:
    """A store holding one finished prediction (what ``stream`` reads through)."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction

    async def wait(self, *_: Any, **__: Any) -> Prediction:
        return self.prediction.copy()


@pytest.mark.parametrize("urls", [False, True])
def test_the_event_stream_sends_the_same_events(urls: bool) -> None:
    prediction = finished(outputs(5, SLICE_BYTES + 5), output_urls=urls, base_url="http://h")

    async def collect() -> list[str | bytes]:
        return [piece async for piece in stream(OneDone(prediction), "p1")]  # type: ignore[arg-type]

    pieces = asyncio.run(collect())
    text = "".join(p if isinstance(p, str) else p.decode() for p in pieces)
    values = [
        f"http://h/v1/predictions/p1/output/{o.name}" if urls else data_uri(o)
        for o in prediction.outputs or []
    ]
    expected = (
        encode("logs", "a log line", 1)
        + "".join(encode("output", v, 2 + i) for i, v in enumerate(values))
        + encode("done", "{}", 4)
    )
    assert text == expected
    assert max(len(p) for p in pieces) <= max(len(encode("output", values[0], 2)), 2**16)


# -- many readers of one large prediction, over real sockets ----------------------------------

#: What one reader may cost the server beyond the shared outputs: the transport's write buffer
#: (64 KiB high-water mark), the slice being sent and its HTTP framing (64 KiB each), and the
#: connection's own objects (request, task, parser: ~100 KiB); rounded up to 512 KiB.
PER_READER_BYTES = 512 * 1024
#: Allocator and interpreter noise for the run (arenas, caches warming up).
FIXED_BYTES = 32 * 2**20


def readers(port: int, paths: list[str], first_bytes: int) -> Iterator[socket.socket]:
    """A connection per path that has read ``first_bytes`` of its answer and then stops
    reading: the server has begun to send the outputs, and must now hold what it has not."""
    opened = []
    for path in paths:
        # (the kernel's own buffers are left as they are: a receive buffer below the
        # loopback's MSS stalls the sender on zero-window probes)
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        opened.append(sock)
    for sock in opened:
        got = 0
        while got < first_bytes:
            chunk = sock.recv(min(65536, first_bytes - got))
            assert chunk, "the server closed a reader's connection"
            got += len(chunk)
        yield sock


def test_readers_of_a_large_prediction_share_one_copy_of_its_outputs() -> None:
    # Before: each reader built its own copy of the outputs (data: URIs, then the JSON text or
    # the event, then bytes in the transport): 50 streams + 50 GETs took RSS +2.2 GB.
    n = 50
    with inference_process({**QUIET, "MAX_CONNECTIONS": "400"}) as (url, process):
        created = httpx.post(
            f"{url}/v1/predictions",
            json={"input": LARGE},
            headers={"Prefer": "wait=60"},
            timeout=120,
        )
        prediction = created.json()
        assert prediction["status"] == "succeeded", prediction
        uri_bytes = sum(len(uri) for uri in prediction["output"])
        for _ in range(2):  # warm-up: the allocator reaches the size one full answer needs
            assert len(httpx.get(f"{url}/v1/predictions/{prediction['id']}").content) > uri_bytes
        before = rss_kib(process.pid) * 1024
        base = f"/v1/predictions/{prediction['id']}"
        paths = [f"{base}/stream", base] * n
        port = int(url.rsplit(":", 1)[1])
        # 128 KiB in: past the headers and logs, well into the first output
        opened = list(readers(port, paths, 128 * 1024))
        grown = rss_kib(process.pid) * 1024 - before
        for sock in opened:
            sock.close()
    bound = FIXED_BYTES + len(paths) * PER_READER_BYTES
    # the bound has teeth: far below one copy of the outputs per reader
    assert bound < len(paths) * uri_bytes / 10
    print(f"{len(paths)} readers of {uri_bytes / 2**20:.1f} MB: RSS +{grown / 2**20:.0f} MiB")
    assert grown < bound, (grown, bound)


# -- /metrics: each store's size, and the memory ceiling under mixed traffic -------------------


def gauges(url: str) -> dict[tuple[str, str], float]:
    """``inference_store_{items,bytes}`` by (family, store)."""
    found = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("inference_store_"):
            name, value = line.rsplit(" ", 1)
            family, _, label = name.partition('{store="')
            found[(family, label.rstrip('"}'))] = float(value)
    return found


def prediction_bytes(prediction: dict[str, Any]) -> int:
    """What the store counts for a finished prediction: input (measured as the store measures
    it, without serialising it), logs and images."""
    images = sum(len(base64.b64decode(uri.split(",", 1)[1])) for uri in prediction["output"] or [])
    return json_size(prediction["input"]) + len(prediction["logs"]) + images


def listed_ids(url: str) -> list[str]:
    """Every prediction's id, page by page."""
    ids: list[str] = []
    page: str | None = f"{url}/v1/predictions"
    while page is not None:
        answer = httpx.get(page).json()
        ids += [p["id"] for p in answer["results"]]
        page = answer["next"]
    return ids


def ceiling_bytes(settings: Settings, model_bytes: int) -> int:
    """The README's memory ceiling ("Memory"), term by term, for ``settings``."""
    mib = 2**20
    job = (2 + 4) * (settings.max_pixels * 3 + 4096)
    limits = DecodeLimits.of(settings)
    decode = limits.max_bytes * limits.concurrent
    return (
        model_bytes
        + settings.predictions_max_bytes
        + settings.files_max_bytes
        + settings.webhook_queue_max_bytes
        + int(settings.image_link_store_mb * mib)
        + int(settings.result_cache_mb * mib)
        + settings.lora_cache_max_bytes
        + settings.max_queue_size * job
        + settings.max_connections * 3 * settings.max_image_body_bytes
        + decode
    )


#: Small budgets, so every store fills (and evicts, or refuses) within seconds.
SOAK_ENV = {
    **QUIET,
    "PREDICTIONS_MAX_BYTES": "1000000",
    "PREDICTIONS_TTL_S": "3600",
    "IMAGE_LINK_STORE_MB": "1",
    "WEBHOOK_QUEUE_MAX_BYTES": "1000000",
    "RESULT_CACHE_MB": "1",
    "LORA_CACHE_MAX_BYTES": "10000000",
    "MAX_QUEUE_SIZE": "8",
    "MAX_CONNECTIONS": "16",
    "MAX_BODY_BYTES": "100000",
    "MAX_IMAGE_BYTES": "1000000",
}


def mixed_traffic(url: str, seconds: float) -> tuple[dict[int, int], list[str]]:
    """Every store's traffic in turn for ``seconds``: /predict (the result cache), Replicate
    predictions read as JSON and as events (the prediction store), OpenAI ``url`` images (the
    link store), Cog's synchronous predictions, and refused input. (statuses, image links)."""
    statuses: dict[int, int] = {}
    links: list[str] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as client:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            small = {"width": 128, "height": 128, "steps": 2, "seed": n, "prompt": f"fox {n}"}
            answers = [
                client.post("/predict", json=small),
                client.post("/predict", json={"width": 1004}),
                client.post("/predictions", json={"input": {**small, "num_outputs": 2}}),
            ]
            created = client.post(
                "/v1/predictions", json={"input": small}, headers={"Prefer": "wait"}
            )
            answers.append(created)
            if created.status_code == 201:
                base = f"/v1/predictions/{created.json()['id']}"
                with client.stream("GET", f"{base}/stream") as events:
                    assert b"event: done" in b"".join(events.iter_bytes())
                answers.append(client.get(base))
            generated = client.post(
                "/v1/images/generations",
                json={"prompt": f"fox {n}", "size": "256x256", "response_format": "url"},
            )
            answers.append(generated)
            links += [d["url"] for d in generated.json().get("data", [])]
            for answer in answers:
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    return statuses, links


def soak(seconds: float) -> None:
    """Mixed traffic, then: RSS under the ceiling, and the store gauges equal to what the
    stores hold, counted from outside (every prediction and every live link read back)."""
    with inference_process(SOAK_ENV) as (url, process):
        model_bytes = rss_kib(process.pid) * 1024
        statuses, links = mixed_traffic(url, seconds)
        rss = rss_kib(process.pid) * 1024
        held = gauges(url)
        predictions = [httpx.get(f"{url}/v1/predictions/{i}").json() for i in listed_ids(url)]
        live = [r.content for r in (httpx.get(link) for link in links) if r.status_code == 200]
    ceiling = ceiling_bytes(Settings(**{k.lower(): v for k, v in SOAK_ENV.items()}), model_bytes)
    print(
        f"soak {seconds:.0f} s: {statuses}; RSS {model_bytes / 2**20:.0f} -> "
        f"{rss / 2**20:.0f} MiB, ceiling {ceiling / 2**20:.0f} MiB; stores {held}"
    )
    assert set(statuses) <= {200, 201, 422, 503} and statuses.get(422), statuses
    assert rss < ceiling
    assert held[("inference_store_items", "predictions")] == len(predictions) > 0
    assert held[("inference_store_bytes", "predictions")] == sum(map(prediction_bytes, predictions))
    assert held[("inference_store_items", "image_links")] == len(live) > 0
    assert held[("inference_store_bytes", "image_links")] == sum(map(len, live))
    assert 0 < held[("inference_store_bytes", "result_cache")] <= 2**20
    assert held[("inference_store_bytes", "predictions")] <= 1_000_000


def test_a_short_soak_stays_under_the_ceiling_and_the_gauges_add_up() -> None:
    soak(seconds=20)


@pytest.mark.soak
def test_a_soak_of_mixed_traffic_stays_under_the_memory_ceiling() -> None:
    soak(seconds=180)
