"""Unloading a version never stalls the event loop, even while its worker waits for the
device (``fleet``, ``engine.arbiter``).

A version's worker that has taken a batch waits on the shared device's arbiter while another
version's long call runs. If that version is evicted (MAX_LOADED_MODELS) as its last request
lets go, ``Service.stop`` joins that worker: up to the other version's whole call, or the
engine's 30 s join limit. The release runs in the request's ``finally`` on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

from inference.engine.arbiter import DeviceArbiter
from inference.fleet import Fleet
from inference.models.mock import MockModel
from inference.registry import Registry, Version, VersionRef
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel

SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1}


class OwnDeviceModel(MockModel):
    """The mock on a device of its own: its warm-up never waits for the shared "cpu"."""

    device = "review-own-device"


def mock_models(tmp_path: Path, *others: str) -> Path:
    """A models file: the default model "base" and ``others``, each one mock version "v1"."""
    path = tmp_path / "models.toml"
    path.write_text(
        "".join(
            f'[[models]]\nname = "{name}"\n'
            + ("default = true\n" if name == "base" else "")
            + '  [[models.versions]]\n  name = "v1"\n  backend = "mock"\n'
            for name in ("base", *others)
        )
    )
    return path


def wait_until(condition, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_evicting_a_version_whose_worker_waits_for_the_device_leaves_the_loop_free(
    tmp_path: Path,
) -> None:
    path = mock_models(tmp_path, "b", "c")
    settings = Settings(models_file=path, result_cache_mb=0, max_loaded_models=1)
    holder = GatedModel()  # the default version: holds the shared "cpu" for a long call

    def build(version: Version) -> Service:
        model = OwnDeviceModel() if version.ref.model == "c" else MockModel()
        return Service(model, version.settings)

    default = Service(holder, settings).start()
    fleet = Fleet(Registry.from_settings(settings), default, max_loaded=1, build=build)
    cpu = DeviceArbiter.of("cpu")
    watchdog = threading.Timer(20.0, holder.gate.set)  # the bug's stall ends here, not never

    async def scenario() -> bool:
        async with fleet.serving("b") as routed:  # b loaded (and warmed) while "cpu" is free
            await routed.service.submit(SMALL)
        holder.hold()
        held = asyncio.ensure_future(default.submit(SMALL))
        await asyncio.to_thread(holder.entered.wait, 20)

        async def on_b() -> None:
            async with fleet.serving("b") as routed:
                await routed.service.submit(SMALL)

        waiting = asyncio.ensure_future(on_b())
        await asyncio.to_thread(wait_until, lambda: cpu.waiting == 1)  # b's worker waits
        watchdog.start()
        async with fleet.serving("c"):  # over budget while b is busy: b stays, for now
            waiting.cancel()  # b's client leaves: its version is idle and evicted
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            released_while_held = not holder.gate.is_set()
        holder.gate.set()
        await held
        return released_while_held

    try:
        assert asyncio.run(scenario()), "the eviction waited on the event loop for the device"
    finally:
        watchdog.cancel()
        holder.gate.set()
        fleet.stop()
        default.stop()


def test_a_version_that_finishes_loading_after_the_fleet_stopped_is_stopped_too(
    tmp_path: Path,
) -> None:
    path = mock_models(tmp_path, "late")
    settings = Settings(models_file=path, result_cache_mb=0)
    building, go_on = threading.Event(), threading.Event()
    built: list[Service] = []

    def build(version: Version) -> Service:
        building.set()
        go_on.wait(20)  # the weights take a while: the server shuts down meanwhile
        built.append(Service(MockModel(), version.settings))
        return built[-1]

    default = Service(MockModel(), settings).start()
    fleet = Fleet(Registry.from_settings(settings), default, build=build)

    async def first_request() -> None:
        async with fleet.serving("late"):
            pass

    async def scenario() -> None:
        request = asyncio.ensure_future(first_request())
        await asyncio.to_thread(building.wait, 20)
        fleet.stop()
        go_on.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await request

    try:
        asyncio.run(scenario())
        wait_until(lambda: bool(built) and built[0].engine.phase != "loading")
        assert built[0].engine.phase == "stopped"  # not serving on, unowned, after shutdown
        assert fleet.service(VersionRef("late", "v1")) is None
    finally:
        go_on.set()
        for service in built:
            service.stop()
        default.stop()
