"""The work between two batches that a closed-loop client waits on (BENCHMARKS.md, batching):
a batch's encodings start from the engine worker, in parallel, and a generating request's
dependencies run on the event loop instead of hopping through the thread pool."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator

import httpx
import pytest
import starlette.concurrency
from fastapi.dependencies import utils as dependency_utils
from fastapi.testclient import TestClient

from inference.engine import encoding
from inference.engine.encoding import Output, encode_when_done
from inference.errors import ModelError
from inference.http.app import create_app
from inference.models.mock import MockModel
from inference.service import Service
from inference.settings import Settings
from tests.servers import serving_in_thread

QUICK = {"width": 64, "height": 64, "steps": 2, "seed": 7}


def output(marker: int) -> Output:
    return Output(pixels=[], batch_images=1, queue_s=0.0, inference_s=float(marker))


def test_encoding_starts_in_the_pool_the_moment_the_output_is_set() -> None:
    ran_on: list[str] = []

    def encode(out: Output) -> str:
        ran_on.append(threading.current_thread().name)
        return f"encoded {out.inference_s:g}"

    raw: concurrent.futures.Future[Output] = concurrent.futures.Future()
    encoded = encode_when_done(raw, encode)  # type: ignore[arg-type]
    assert not encoded.done() and not ran_on
    raw.set_result(output(3))
    assert encoded.result(timeout=30) == "encoded 3"
    assert ran_on[0].startswith("encode")


def test_a_batch_encodes_in_parallel() -> None:
    """Each encoding waits for all the others to start: it finishes only if they run at once."""
    together = threading.Barrier(4, timeout=30)

    def encode(out: Output) -> float:
        together.wait()
        return out.inference_s

    raws = [concurrent.futures.Future[Output]() for _ in range(4)]
    encoded = [encode_when_done(raw, encode) for raw in raws]  # type: ignore[arg-type]
    for index, raw in enumerate(raws):
        raw.set_result(output(index))
    assert [e.result(timeout=60) for e in encoded] == [0, 1, 2, 3]


def test_the_batch_error_and_the_encoding_error_pass_through() -> None:
    raw: concurrent.futures.Future[Output] = concurrent.futures.Future()
    failed = encode_when_done(raw, lambda out: pytest.fail("encoded a failed batch"))
    raw.set_exception(ModelError("the model failed"))
    with pytest.raises(ModelError, match="the model failed"):
        failed.result(timeout=30)

    def broken(out: Output) -> None:
        raise ValueError("cannot encode this")

    raw = concurrent.futures.Future()
    encoded = encode_when_done(raw, broken)  # type: ignore[arg-type]
    raw.set_result(output(1))
    with pytest.raises(ValueError, match="cannot encode this"):
        encoded.result(timeout=30)


class Inline:
    """An encoding pool that runs what it is given at once, on the submitting thread: what
    ran is known when ``set_result`` returns (an error in a pool thread would go unseen)."""

    def submit(self, fn, *args):  # type: ignore[no-untyped-def]
        fn(*args)


def test_a_caller_that_left_is_not_encoded_for_and_a_dropped_request_cancels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding, "encoding_pool", Inline)
    encoded_for: list[Output] = []
    raw: concurrent.futures.Future[Output] = concurrent.futures.Future()
    encoded = encode_when_done(raw, encoded_for.append)  # type: ignore[arg-type]
    assert encoded.cancel()
    raw.set_result(output(1))
    assert encoded_for == []  # nobody waits for it: not encoded

    raw = concurrent.futures.Future()
    encoded = encode_when_done(raw, lambda out: out)
    assert raw.cancel()  # the batcher dropped the request before its batch
    assert encoded.cancelled()


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    service = Service(MockModel(), Settings(ui=False, max_wait_ms=50, result_cache_mb=0)).start()
    yield service
    service.stop()


def test_concurrent_requests_get_the_bytes_a_lone_blocking_caller_gets(service: Service) -> None:
    """Eight awaiting callers share batches and encode in the pool; each image is the same
    bytes as the one the blocking path encodes on its own thread."""
    seeds = list(range(8))

    async def together() -> list[bytes]:
        results = await asyncio.gather(*(service.submit({**QUICK, "seed": s}) for s in seeds))
        return [result.images[0].data for result in results]

    concurrent_bytes = asyncio.run(together())
    alone = [service.engine.run(service.job({**QUICK, "seed": s})).images[0].data for s in seeds]
    assert concurrent_bytes == alone


def test_a_generating_request_sends_no_dependency_through_the_thread_pool(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI runs a plain ``def`` dependency in its thread pool: four hops per request, each
    waiting on the GIL under load, for work that only reads ``app.state``."""
    hops: list[str] = []
    real = starlette.concurrency.run_in_threadpool

    async def counted(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(dependency_utils, "run_in_threadpool", counted)
    app = create_app(service.settings, service)
    with serving_in_thread(app) as url:
        response = httpx.post(f"{url}/predict", json=QUICK, timeout=60)
    assert response.status_code == 200, response.text
    assert hops == []


def test_the_token_and_rate_limit_still_guard_the_route() -> None:
    # One token a minute: the third request is refused however slowly the second one ran.
    settings = Settings(ui=False, auth_token="s3cret", rate_limit_per_minute=1, rate_limit_burst=1)
    service = Service(MockModel(), settings).start()
    try:
        with TestClient(create_app(settings, service)) as http:
            assert http.post("/predict", json=QUICK).status_code == 401
            auth = {"Authorization": "Bearer s3cret"}
            assert http.post("/predict", json=QUICK, headers=auth).status_code == 200
            assert http.post("/predict", json=QUICK, headers=auth).status_code == 429
    finally:
        service.stop()
