"""The result cache: seeded requests served again without the model, byte for byte.

Through the service (so every front door), with the X-Cache header and Prometheus counters on
HTTP, bounded by bytes, never for requests without a seed, and single-flight: identical requests
that arrive together are computed once.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from inference.errors import ModelError
from inference.http.app import create_app
from inference.models.mock import MockModel
from inference.result_cache import ResultCache
from inference.results import GeneratedImage, GenerateResult, Timings
from inference.schema import GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel
from tests.servers import serving_in_thread
from tests.test_http import metric

SMALL = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 4}


def started(model: MockModel | None = None, **settings: object) -> Service:
    service = Service(model or MockModel(), Settings(**{"max_wait_ms": 0, **settings})).start()
    if isinstance(model, GatedModel):
        model.calls.clear()  # the warm-up's
    return service


def test_a_seeded_request_is_computed_once_and_served_byte_identical() -> None:
    service = started()
    first = service.generate({**SMALL, "seed": 5, "num_outputs": 2})
    again = service.generate({**SMALL, "seed": 5, "num_outputs": 2})
    assert (first.cache, again.cache) == ("miss", "hit")
    assert [i.data for i in again.images] == [i.data for i in first.images]
    assert service.engine.stats.model_calls == 1 and (service.cache.hits, service.cache.misses) == (
        1,
        1,
    )
    assert again.timings.inference_ms == 0 and again.batch_size == first.batch_size
    uncached = started(result_cache_mb=0).generate({**SMALL, "seed": 5, "num_outputs": 2})
    assert uncached.cache is None
    assert [i.data for i in uncached.images] == [i.data for i in first.images]
    service.stop()


def test_every_resolved_field_is_part_of_the_key() -> None:
    service = started()
    base = {**SMALL, "seed": 5}
    variants = [
        base,
        {**base, "output_format": "webp"},
        {**base, "seed": 6},
        {**base, "prompt": "a blue fox"},
        {**base, "steps": 5},
        {**base, "negative_prompt": "fog"},
        {**base, "num_outputs": 2},
    ]
    assert [service.generate(v).cache for v in variants] == ["miss"] * len(variants)
    assert service.generate({**base, "steps": 4}).cache == "hit"  # the same job, spelt out
    assert service.engine.stats.model_calls == len(variants)
    service.stop()


def test_a_request_without_a_seed_is_never_cached() -> None:
    service = started()
    results = [service.generate(SMALL) for _ in range(2)]
    assert [r.cache for r in results] == [None, None]
    assert service.engine.stats.model_calls == 2 and len(service.cache) == 0
    # Its drawn seed, asked for explicitly, is a request like any other.
    assert service.generate({**SMALL, "seed": results[0].seed}).cache == "miss"
    service.stop()


def test_the_cache_holds_at_most_its_bytes_least_recently_used_first() -> None:
    def result(size: int) -> GenerateResult:
        image = GeneratedImage(
            data=b"x" * size, seed=0, width=8, height=8, format="png", media_type="image/png"
        )
        timings = Timings(queue_ms=0, inference_ms=0, encode_ms=0, total_ms=0)
        return GenerateResult(images=[image], seed=0, model="m", batch_size=1, timings=timings)

    cache = ResultCache(max_bytes=250)

    def run(key: str, size: int) -> GenerateResult:
        async def compute() -> GenerateResult:
            return result(size)

        return asyncio.run(cache.submit(key, compute))

    for key in "abc":
        run(key, 100)
    assert len(cache) == 2 and cache.bytes == 200  # "a" went to make room for "c"
    assert run("b", 100).cache == "hit"  # "b" is now the most recent
    run("d", 100)
    assert run("b", 100).cache == "hit"
    assert run("c", 100).cache == "miss"  # "c" was the oldest
    run("huge", 1000)
    assert "huge" not in cache._entries and cache.bytes <= 250


def test_identical_requests_arriving_together_are_computed_once() -> None:
    model = GatedModel()
    service = started(model, max_wait_ms=50)
    request = {**SMALL, "seed": 11}

    async def burst() -> list[GenerateResult]:
        model.hold()
        tasks = [asyncio.ensure_future(service.submit(request)) for _ in range(6)]
        await asyncio.to_thread(model.entered.wait, 5)
        threaded = asyncio.to_thread(service.generate, request)  # a sync caller joins too
        await asyncio.sleep(0.1)
        model.gate.set()
        return [*await asyncio.gather(*tasks), await threaded]

    results = asyncio.run(burst())
    assert len(model.calls) == 1 and len(model.calls[0]) == 1  # one job, in one call
    assert sorted(r.cache or "" for r in results) == ["hit"] * 6 + ["miss"]
    assert len({r.images[0].data for r in results}) == 1
    service.stop()


def test_a_caller_that_leaves_hands_the_computation_to_one_that_waits() -> None:
    model = GatedModel()
    service = started(model)
    request = {**SMALL, "seed": 12}

    async def leader_leaves() -> GenerateResult:
        model.hold()
        leader = asyncio.ensure_future(service.submit(request))
        await asyncio.to_thread(model.entered.wait, 5)
        follower = asyncio.ensure_future(service.submit(request))
        await asyncio.sleep(0.05)
        leader.cancel()  # its client disconnected
        model.gate.set()
        return await follower

    result = asyncio.run(leader_leaves())
    assert result.seed == 12 and result.cache == "miss"  # computed again, for the follower
    assert service.generate(request).cache == "hit"
    service.stop()


def test_a_domain_error_is_shared_and_not_cached() -> None:
    model = GatedModel()
    service = started(model)
    request = {**SMALL, "prompt": "boom", "seed": 13}  # GatedModel raises on "boom"
    model.hold()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(service.generate, request) for _ in range(3)]
        model.entered.wait(5)
        threading.Event().wait(0.1)
        model.gate.set()
        errors = [f.exception() for f in futures]
    assert all(isinstance(e, ModelError) for e in errors) and len(model.calls) == 1
    assert len(service.cache) == 0
    with pytest.raises(ModelError):
        service.generate(request)  # tried again, not served from the cache
    assert len(model.calls) == 2
    service.stop()


def test_http_says_hit_or_miss_and_prometheus_counts_them() -> None:
    service = started()
    with serving_in_thread(create_app(service.settings, service)) as url:
        body = {**SMALL, "seed": 21}
        miss = httpx.post(f"{url}/predict", json=body, timeout=30)
        hit = httpx.post(f"{url}/predict", json=body, headers={"accept": "image/png"}, timeout=30)
        unseeded = httpx.post(f"{url}/predict", json=SMALL, timeout=30)
        metrics = httpx.get(f"{url}/metrics").text
    assert (miss.headers["x-cache"], miss.json()["cache"]) == ("miss", "miss")
    assert hit.headers["x-cache"] == "hit"
    assert hit.content == GeneratedImage.model_validate(miss.json()["images"][0]).data
    assert "x-cache" not in unseeded.headers and unseeded.json()["cache"] is None
    assert metric(metrics, "inference_result_cache_hits_total") == 1
    assert metric(metrics, "inference_result_cache_misses_total") == 1
    assert metric(metrics, "inference_result_cache_entries") == 1
    assert metric(metrics, "inference_result_cache_bytes") == len(hit.content)
    assert service.info()["limits"]["result_cache_mb"] == 64
    service.stop()


def test_a_request_without_a_seed_never_reads_the_cache_either() -> None:
    """Its drawn seed could repeat one that is cached; it is computed anyway."""
    service = started()
    first = service.generate(GenerateRequest(**SMALL, seed=30))
    job = service.job(SMALL)
    drawn = type(job)(**{**vars(job), "seeds": (30,)})  # as if the server had drawn 30
    assert drawn == service.job({**SMALL, "seed": 30}) and drawn.seed_drawn
    assert service.generate(drawn).cache is None
    assert service.generate(drawn).images[0].data == first.images[0].data
    assert service.engine.stats.model_calls == 3
    service.stop()
