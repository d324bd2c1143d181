"""Versions that share a device take turns on it (issue 23): ``engine.arbiter``.

Every version keeps its own queue and batcher; the device's arbiter serves their calls one at a
time, round robin. The fleet test runs two versions on one device ("cpu": the mock and a model
that names no device count as one) with a saturated version beside a quiet one, and instruments
the model calls: no two overlap, and the quiet version waits about one busy call per request.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from pathlib import Path

import pytest

from inference.engine.arbiter import DeviceArbiter
from inference.fleet import Fleet
from inference.models.devices import shared_device
from inference.registry import VersionRef
from inference.service import Service
from inference.settings import Settings
from tests import shared_device as recording
from tests.fakes import SleepyModel

STEP_S = 0.05  # RecordingModel's sleep per step
BUSY_STEPS, QUIET_STEPS = 3, 2


def wait_until(condition, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def test_a_released_device_goes_to_the_longest_waiter_not_back_to_its_holder() -> None:
    arbiter = DeviceArbiter("test")
    order: list[str] = []

    def turn(name: str) -> None:
        with arbiter:
            order.append(name)

    arbiter.acquire()  # "a" holds the device
    threads = []
    for waiting, name in enumerate(("b", "c"), start=1):
        threads.append(threading.Thread(target=turn, args=(name,)))
        threads[-1].start()
        wait_until(lambda waiting=waiting: arbiter.waiting == waiting)
    arbiter.release()
    turn("a")  # "a" asks again at once, as a saturated worker does: it waits its turn
    for thread in threads:
        thread.join(10)
    assert order == ["b", "c", "a"]
    assert arbiter.waiting == 0
    turn("alone")  # free again: taken at once
    assert order[-1] == "alone"


def test_each_device_name_has_one_arbiter_and_replicas_take_their_own_devices() -> None:
    assert DeviceArbiter.of("cuda:1") is DeviceArbiter.of("cuda:1")
    assert DeviceArbiter.of("cuda:0") is not DeviceArbiter.of("cuda:1")
    assert shared_device(object(), "auto") == "cpu"  # the mock, a class naming no device
    assert shared_device(object(), "cuda") == "cuda:0"
    loaded = type("Loaded", (), {"device": "cuda"})()  # DEVICE=auto resolved by the backend
    assert shared_device(loaded, "auto") == "cuda:0"
    two = Service(SleepyModel(), Settings(devices="cuda:0,cuda:1", model="tests.fakes:SleepyModel"))
    one = Service.from_settings(Settings())
    two.start(), one.start()
    try:
        assert [a.device for a in two.engine.arbiters] == ["cuda:0", "cuda:1"]
        assert two.engine.arbiters[1] is DeviceArbiter.of("cuda:1")
        assert one.engine.arbiters == [DeviceArbiter.of("cpu")]
    finally:
        two.stop(), one.stop()
    # A name listed twice is two devices (the stand-in's simulated ones): no turns between them.
    twice = Service.from_settings(Settings(devices="cpu,cpu")).start()
    try:
        assert [a.device for a in twice.engine.arbiters] == ["cpu", "cpu#1"]
    finally:
        twice.stop()


def registry(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[models]]\nname = "quiet"\ndefault = true\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "tests.shared_device:QuietModel"\n'
        '[[models]]\nname = "busy"\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "tests.shared_device:BusyModel"\n'
        "  max_batch_size = 1\n"
    )
    return path


def test_a_quiet_version_waits_about_one_busy_call_and_calls_never_overlap(
    tmp_path: Path,
) -> None:
    fleet = Fleet.from_settings(Settings(models_file=registry(tmp_path), result_cache_mb=0))
    fleet.default.start()
    small = {"prompt": "a fox", "width": 64, "height": 64}

    async def serve(model: str, **fields: object) -> None:
        async with fleet.serving(model) as routed:
            await routed.service.submit({**small, **fields})

    async def race() -> tuple[list[float], int]:
        await serve("busy", steps=BUSY_STEPS)  # loaded before the clock starts
        recording.CALLS.clear()
        busy = [asyncio.ensure_future(serve("busy", steps=BUSY_STEPS)) for _ in range(50)]
        await asyncio.sleep(0.2)  # the busy queue holds ~50 calls of 0.15 s now
        quiet = []
        for seed in range(20):
            start = time.perf_counter()
            await serve("quiet", steps=QUIET_STEPS, seed=seed)
            quiet.append(time.perf_counter() - start)
        waiting = sum(not task.done() for task in busy)
        await asyncio.gather(*busy)
        return quiet, waiting

    try:
        quiet, still_busy = asyncio.run(race())
    finally:
        fleet.stop()
        fleet.default.stop()
    assert still_busy > 0  # the busy version was saturated the whole time
    calls = sorted(recording.CALLS, key=lambda call: call[1])
    for (_, _, ended), (label, started, _) in itertools.pairwise(calls):
        assert started >= ended, f"a {label} call began {ended - started:.3f} s before one ended"
    # Round robin: between two quiet calls the device served about one busy call, not a queue.
    between, busy_run = [], 0
    for label, _, _ in calls:
        if label == "busy":
            busy_run += 1
        else:
            between.append(busy_run)
            busy_run = 0
    assert statistics.median(between[1:]) <= 1, between
    one_round_s = (BUSY_STEPS + QUIET_STEPS) * STEP_S
    p95 = statistics.quantiles(quiet, n=20)[-1]
    assert p95 < 4 * one_round_s, f"quiet p95 {p95:.3f} s; one busy call + its own: {one_round_s} s"


@pytest.mark.parametrize(
    ("host_cached", "expected"),
    [
        (0, ["disk"] * 6),  # today's behaviour: every switch back reads the weights again
        (1, ["disk", "disk"] + ["host memory"] * 4),
    ],
)
def test_a_switch_back_loads_from_host_memory_with_host_cached_models(
    tmp_path: Path, host_cached: int, expected: list[str]
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[models]]\nname = "base"\ndefault = true\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "mock"\n'
        '[[models]]\nname = "a"\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "tests.shared_device:PreloadingModel"\n'
        '[[models]]\nname = "b"\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "tests.shared_device:PreloadingModel"\n'
    )
    settings = Settings(models_file=path, max_loaded_models=1, host_cached_models=host_cached)
    fleet = Fleet.from_settings(settings)
    fleet.default.start()
    recording.LOADS.clear()

    async def serve(model: str) -> None:
        async with fleet.serving(model) as routed:
            await routed.service.submit({"prompt": "a fox", "width": 64, "height": 64, "steps": 1})

    try:
        for _ in range(3):
            for model in ("a", "b"):
                asyncio.run(serve(model))
        assert list(recording.LOADS) == expected
        assert fleet.counts[VersionRef("a", "v1")].loads == 3
        (a,) = [m for m in fleet.table() if m["name"] == "a"]
        # "a" is unloaded now; with the tier it waits in host memory for its next request.
        assert a["versions"][0]["state"] == ("host memory" if host_cached else "unloaded")
    finally:
        fleet.stop()
        fleet.default.stop()
