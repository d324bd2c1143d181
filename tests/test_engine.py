"""The engine: dynamic batching, back-pressure, timeouts, cancellation and failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from inference.errors import (
    InvalidRequest,
    ModelError,
    ModelLoadError,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from inference.models.mock import MockModel
from inference.schema import GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel, MiscountingModel, SlowStepsModel

SMALL = {"width": 64, "height": 64, "steps": 4}


def req(prompt: str = "a red fox", seed: int = 1, **kw: object) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, seed=seed, **{**SMALL, **kw})  # type: ignore[arg-type]


def started(model: MockModel, **settings: object) -> Service:
    return Service(model, Settings(**settings)).start()


def held(**settings: object) -> tuple[GatedModel, Service]:
    """A started service (no batching window) whose next model call waits for the gate."""
    model = GatedModel()
    service = started(model, max_wait_ms=0, **settings)
    model.hold()
    return model, service


def wait_for_queue(service: Service, depth: int) -> None:
    """Poll until ``depth`` requests wait in the queue (the deadline is only a guard)."""
    deadline = time.monotonic() + 30
    while service.engine.queue_depth < depth and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.engine.queue_depth >= depth


def occupy(
    pool: ThreadPoolExecutor, model: GatedModel, service: Service, request: GenerateRequest
) -> Future[Any]:
    """Submit ``request`` and return once the held model is running it."""
    running = pool.submit(service.generate, request)
    assert model.entered.wait(5)
    return running


def running_and_queued(
    pool: ThreadPoolExecutor, model: GatedModel, service: Service
) -> tuple[Future[Any], Future[Any]]:
    """Seed 1 running on the held model and seed 2 waiting in the queue behind it."""
    running = occupy(pool, model, service, req(seed=1))
    queued = pool.submit(service.generate, req(seed=2))
    wait_for_queue(service, 1)
    return running, queued


def queued_behind_a_held_batch(
    requests: list[GenerateRequest], max_batch_size: int
) -> tuple[list[list[Any]], list[Any]]:
    """Run ``requests`` while the worker is held on another batch, so that all of them are
    queued before the batcher takes any; return the model calls that served them and their
    results, in order."""
    model, service = held(max_batch_size=max_batch_size)
    blocker = threading.Thread(target=service.generate, args=(req(seed=99),))
    blocker.start()
    assert model.entered.wait(5)
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(service.generate, r) for r in requests]
        time.sleep(0.2)  # let every request reach the queue behind the busy worker
        model.gate.set()
        results = [f.result(timeout=30) for f in futures]
    blocker.join()
    service.stop()
    return model.calls[2:], results  # the first call is warm-up, the second the blocker


def test_32_concurrent_requests_share_model_calls_and_match_solo_runs() -> None:
    service = started(MockModel(), max_batch_size=8, max_wait_ms=50)
    sizes: list[int] = []
    service.engine.add_batch_listener(lambda size, seconds: sizes.append(size))
    requests = [req(f"prompt {i % 5}", seed=i) for i in range(32)]

    async def all_at_once() -> list:
        return await asyncio.gather(*(service.submit(r) for r in requests))

    results = asyncio.run(all_at_once())
    assert service.engine.stats.model_calls < 32 and sum(sizes) == 32 and max(sizes) <= 8
    assert max(r.batch_size for r in results) > 1
    solo = started(MockModel(), max_batch_size=1)
    for request, result in zip(requests, results, strict=True):
        assert result.images[0].data == solo.generate(request).images[0].data
        assert result.seed == request.seed
    service.stop()
    solo.stop()


def test_sync_generate_from_many_threads_is_batched_too() -> None:
    service = started(MockModel(), max_batch_size=4, max_wait_ms=50)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: service.generate(req(seed=i)), range(8)))
    assert [r.seed for r in results] == list(range(8))
    assert service.engine.stats.model_calls < 8
    service.stop()


def test_a_lone_caller_does_not_wait_for_company() -> None:
    service = started(MockModel(), max_wait_ms=10_000)  # the longest window settings allow
    for seed in range(3):  # sequential traffic: nobody to wait for
        # half the window: far above any scheduling delay, far below a wait for company
        assert service.generate(req(seed=seed)).timings.queue_ms < 5_000
    service.stop()


def test_batches_respect_max_batch_size_counted_in_images() -> None:
    requests = [req(seed=i, num_outputs=2) for i in range(6)]
    queued_calls, results = queued_behind_a_held_batch(requests, max_batch_size=4)
    assert all(sum(j.num_outputs for j in call) <= 4 for call in queued_calls)
    assert {r.batch_size for r in results} == {4}


def test_incompatible_requests_are_not_merged() -> None:
    requests = [
        req(seed=1, width=64),
        req(seed=2, width=128),
        req(seed=3, width=64),
        req(seed=4, steps=5),
    ]
    queued_calls, results = queued_behind_a_held_batch(requests, max_batch_size=8)
    for call in queued_calls:
        assert len({(j.width, j.height, j.steps) for j in call}) == 1
    assert [r.batch_size for r in results] == [2, 1, 2, 1]


def test_full_queue_refuses_at_once_with_retry_after() -> None:
    model, service = held(max_queue_size=2)
    with ThreadPoolExecutor(3) as pool:
        running = occupy(pool, model, service, req(seed=0))
        queued = [pool.submit(service.generate, req(seed=i)) for i in (1, 2)]
        wait_for_queue(service, 2)
        # Refused while the worker is still held and the queue still full: a caller that
        # waited for room instead would wait for the gate, which only this test opens
        with ThreadPoolExecutor(1) as other, pytest.raises(Overloaded) as info:
            other.submit(service.generate, req(seed=3)).result(timeout=20)
        assert not model.gate.is_set() and service.engine.queue_depth == 2
        assert info.value.retry_after_s >= 1 and "MAX_QUEUE_SIZE" in info.value.message
        model.gate.set()
        assert running.result(30) and all(f.result(30) for f in queued)
    assert service.generate(req(seed=4)).seed == 4  # serving again once the queue drained
    service.stop()


def test_request_times_out_and_engine_keeps_serving() -> None:
    model, service = held(request_timeout_s=0.3)
    with pytest.raises(RequestTimeout, match="REQUEST_TIMEOUT_S"):
        service.generate(req(seed=1))
    model.gate.set()
    assert service.generate(req(seed=2)).seed == 2


def test_request_expired_in_the_queue_never_reaches_the_model() -> None:
    model, service = held(request_timeout_s=0.3)
    with ThreadPoolExecutor(2) as pool:
        busy = occupy(pool, model, service, req("first", seed=1))
        with pytest.raises(RequestTimeout):
            service.generate(req("queued", seed=2))
        model.gate.set()
        with pytest.raises(RequestTimeout):
            busy.result(30)
    service.generate(req("after", seed=3))
    prompts = [j.prompt for call in model.calls for j in call]
    assert "queued" not in prompts and "after" in prompts
    assert service.engine.stats.dropped_requests >= 1


def test_cancelled_caller_is_dropped_before_its_batch_starts() -> None:
    model, service = held()

    async def scenario() -> None:
        busy = asyncio.ensure_future(service.submit(req("busy", seed=1)))
        await asyncio.to_thread(model.entered.wait, 5)
        leaving = asyncio.ensure_future(service.submit(req("leaving", seed=2)))
        await asyncio.sleep(0.05)
        leaving.cancel()
        await asyncio.sleep(0.05)
        model.gate.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await leaving

    asyncio.run(scenario())
    service.generate(req("after", seed=3))
    prompts = [j.prompt for call in model.calls for j in call]
    assert "leaving" not in prompts and service.engine.stats.dropped_requests == 1


def test_batch_whose_callers_all_left_stops_between_steps() -> None:
    model = SlowStepsModel(step_s=0.05)
    service = started(model, request_timeout_s=0.25, max_wait_ms=0)
    model.steps_run = 0
    calls = service.engine.stats.model_calls
    with pytest.raises(RequestTimeout):
        service.generate(req(seed=1, steps=100))
    deadline = time.monotonic() + 30  # only a guard: the batch stops at its next step
    while service.engine.stats.abandoned_batches == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.engine.stats.abandoned_batches == 1 and service.engine.stats.model_calls == calls
    assert model.steps_run < 100  # stopped early instead of running all 100 steps
    model.step_s = 0
    assert service.generate(req(seed=2)).seed == 2


def test_each_request_hears_its_own_batchs_progress() -> None:
    service = started(MockModel(), max_wait_ms=0)
    seen: list[tuple[int, int]] = []
    service.generate(req(seed=1, steps=4), progress=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    def broken(step: int, total: int) -> None:
        raise RuntimeError("a listener's bug")

    assert service.generate(req(seed=2, steps=3), progress=broken).seed == 2  # logged, not raised
    service.stop()


def test_cancelling_one_request_of_a_running_batch_leaves_the_others_alone() -> None:
    """A cancelled request hears no more progress; its companions get their images."""
    model = SlowStepsModel(step_s=0.02)
    service = started(model, max_wait_ms=200, max_batch_size=2)
    heard: dict[str, int] = {"stays": 0, "leaves": 0}

    def counting(name: str) -> Any:
        return lambda step, total: heard.__setitem__(name, heard[name] + 1)

    async def scenario() -> None:
        stays = asyncio.ensure_future(service.submit(req("a", seed=1, steps=30), counting("stays")))
        leaves = asyncio.ensure_future(
            service.submit(req("b", seed=2, steps=30), counting("leaves"))
        )
        while heard["leaves"] < 3:
            await asyncio.sleep(0.01)
        leaves.cancel()
        result = await stays
        assert result.batch_size == 2  # they shared the call
        with pytest.raises(asyncio.CancelledError):
            await leaves

    asyncio.run(scenario())
    assert heard["stays"] == 30 and heard["leaves"] < 30
    assert service.engine.stats.abandoned_batches == 0
    service.stop()


def test_failing_batch_fails_only_its_requests() -> None:
    model = GatedModel()
    service = started(model, max_wait_ms=0)
    with pytest.raises(ModelError, match="server log") as info:
        service.generate(req("boom", seed=1))
    assert "CUDA" not in info.value.message  # internals stay in the log
    assert service.generate(req("fine", seed=2)).seed == 2
    assert service.engine.stats.failed_batches == 1 and service.engine.ready


def test_wrong_number_of_outputs_fails_loudly() -> None:
    service = started(MiscountingModel())
    with pytest.raises(ModelError, match="returned 0 images for a request of 1"):
        service.generate(req("short"))
    assert service.generate(req("fine")).images


def test_not_ready_before_start_and_after_a_failed_load(tmp_path) -> None:
    service = Service(MockModel(), Settings())
    with pytest.raises(NotReady, match="still loading"):
        service.generate(req())
    broken = Service(MockModel(tmp_path / "missing.json"), Settings())
    with pytest.raises(ModelLoadError, match=r"missing\.json"):
        broken.start()
    assert broken.engine.phase == "failed"
    with pytest.raises(NotReady, match=r"failed to load: .*missing\.json"):
        broken.generate(req())


def test_result_reports_seeds_timings_and_model() -> None:
    service = started(MockModel())
    result = service.generate(req(seed=10, num_outputs=3, output_format="webp"))
    assert [i.seed for i in result.images] == [10, 11, 12] and result.seed == 10
    assert {i.media_type for i in result.images} == {"image/webp"}
    assert result.model == "mock" and result.batch_size == 3
    t = result.timings
    assert t.total_ms >= t.inference_ms > 0 and t.queue_ms >= 0 and t.encode_ms > 0
    assert service.engine.stats.load_s is not None and service.engine.stats.warmup_s is not None
    service.stop()


def test_stop_fails_queued_requests_cleanly() -> None:
    model, service = held()
    with ThreadPoolExecutor(2) as pool:
        busy, queued = running_and_queued(pool, model, service)
        threading.Timer(0.1, model.gate.set).start()
        service.stop()
        with pytest.raises(NotReady, match="shutting down"):
            queued.result(30)
        # The running batch stops at its next step and fails the same way, not half-served.
        with pytest.raises(NotReady, match="shutting down"):
            busy.result(30)


def test_drain_refuses_new_work_at_once_and_lets_queued_and_running_finish() -> None:
    model, service = held()
    with ThreadPoolExecutor(3) as pool:
        busy, queued = running_and_queued(pool, model, service)
        draining = pool.submit(service.drain, 30)
        while service.engine.phase != "draining":
            time.sleep(0.01)
        assert not service.engine.ready  # /ready answers 503 from now on
        with pytest.raises(NotReady, match="shutting down") as refused:
            service.generate(req(seed=3))
        assert not refused.value.permanent  # so HTTP adds Retry-After
        model.gate.set()
        assert draining.result(30) is True
        assert (busy.result(5).seed, queued.result(5).seed) == (1, 2)
    service.stop()


def test_drain_gives_up_after_its_grace_and_stop_fails_the_rest() -> None:
    model, service = held()
    with ThreadPoolExecutor(1) as pool:
        busy = occupy(pool, model, service, req(seed=1))
        # drain returns while the batch is still held: it gave up, it did not wait it out
        with ThreadPoolExecutor(1) as other:  # a guard against a drain that never returns
            assert other.submit(service.drain, 0.2).result(timeout=30) is False
        assert not model.gate.is_set() and not busy.done()
        threading.Timer(0.1, model.gate.set).start()
        service.stop()
        with pytest.raises(NotReady):
            busy.result(30)


def test_a_failing_listener_neither_fails_its_batch_nor_stops_the_worker() -> None:
    service = started(MockModel())
    calls: list[int] = []

    def broken_metrics(size: int, seconds: float) -> None:
        calls.append(size)
        raise RuntimeError("metrics backend down")

    service.engine.add_batch_listener(broken_metrics)
    service.engine.add_step_listener(lambda step, total: 1 / 0)
    assert service.generate(req(seed=1)).images
    assert service.generate(req(seed=2)).images  # the worker is still alive
    assert calls == [1, 1] and service.engine.stats.failed_batches == 0
    service.stop()


def test_a_bug_outside_the_model_call_fails_its_batch_and_the_worker_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = started(MockModel())
    real = service.engine.calls.run

    def once_broken(live: list) -> None:
        monkeypatch.setattr(service.engine.calls, "run", real)
        raise KeyError("bookkeeping bug")

    monkeypatch.setattr(service.engine.calls, "run", once_broken)
    with pytest.raises(ModelError, match="its log has the details"):
        service.generate(req(seed=1))
    assert service.generate(req(seed=2)).images
    service.stop()


def test_max_batch_size_caps_the_images_of_one_request_too() -> None:
    service = started(MockModel(), max_batch_size=2)
    with pytest.raises(InvalidRequest, match=r"num_outputs must be <= 2 .*MAX_BATCH_SIZE.*got 4"):
        service.generate(req(num_outputs=4))
    assert service.generate(req(num_outputs=2)).batch_size == 2
    service.stop()


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"max_pixels": 64 * 64}, r"MAX_PIXELS.*got 256x256.*DEFAULT_WIDTH"),
        (
            {"default_width": 1024, "default_height": 1024, "max_pixels": 512 * 512},
            r"MAX_PIXELS.*DEFAULT_WIDTH",
        ),
    ],
)
def test_limits_tighter_than_the_defaults_fail_at_start_not_per_request(
    settings: dict, names: str
) -> None:
    service = Service(MockModel(), Settings(**settings))
    with pytest.raises(ModelLoadError, match=names):
        service.start()
    assert service.engine.phase == "failed"


def test_the_models_own_defaults_are_capped_to_tighter_limits() -> None:
    """MAX_STEPS=10 under a model whose default is 20: requests that omit steps get 10."""
    service = started(MockModel(), max_steps=10, max_width=128)
    result = service.generate({"seed": 1})
    assert (service.validator.defaults.steps, result.images[0].width) == (10, 128)
    service.stop()


def test_warm_up_runs_at_the_size_actually_served() -> None:
    model = GatedModel()
    started(model, default_width=96, default_height=64).stop()
    warm_up = model.calls[0][0]
    assert (warm_up.width, warm_up.height) == (96, 64)


def test_load_warm_up_and_model_calls_share_one_thread() -> None:
    """torch's CPU pool is per thread: a second torch thread ran 2.4 x slower (tiny SD)."""
    threads: set[str] = set()

    class Recording(MockModel):
        def load(self) -> None:
            threads.add(threading.current_thread().name)
            super().load()

        def generate(self, jobs, progress=None):  # type: ignore[no-untyped-def]
            threads.add(threading.current_thread().name)
            return super().generate(jobs, progress)

    service = started(Recording())
    service.generate(req())
    service.stop()
    assert threads == {"engine-worker"}


def test_stop_during_load_wins() -> None:
    model = GatedModel()
    model.hold()  # the warm-up call waits, as a slow load would
    service = Service(model, Settings())
    loader = threading.Thread(target=service.start)
    loader.start()
    assert model.entered.wait(5)
    service.stop()
    model.gate.set()
    loader.join(10)
    assert service.engine.phase == "stopped" and len(service.engine._workers) == 1
    service.engine._workers[0].join(5)
    assert not service.engine._workers[0].is_alive()  # it loaded, saw the stop, never served
    with pytest.raises(NotReady, match="shutting down"):
        service.generate(req())


def test_the_service_shows_its_engine_and_validator_instead_of_forwarding_them() -> None:
    """One way to each fact: the engine's state (phase, stats, listeners) and the validator's
    defaults and limits are read through them, not through copies of their members on the
    service; a new member of the seam is a deliberate edit here."""
    service = Service(MockModel(), Settings())
    public = {name for name in dir(service) if not name.startswith("_")}
    assert public - {"settings", "model", "cache"} == {
        *("from_settings", "start", "drain", "stop", "require_ready"),
        *("job", "job_async", "run_blocking", "generate", "submit"),
        *("info", "loaded_adapters", "engine", "validator"),
    }
    assert service.engine.model is service.model and service.engine.phase == "created"
    with pytest.raises(AttributeError):
        service.engine = service.engine  # type: ignore[misc]
    with pytest.raises(AttributeError):
        service.validator = service.validator  # type: ignore[misc]
