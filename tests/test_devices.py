"""Several devices per host (DEVICES): one replica and worker per device over one queue.

Devices are simulated with fake models (each replica its own object): which replica ran a
batch is visible, a replica can be held or made to fail, and outputs are checked against solo
runs, so a request served twice, lost, or failed by the wrong device shows up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError

from inference.engine import Engine
from inference.errors import ModelError
from inference.models import devices
from inference.models.base import ProgressCallback
from inference.schema import Job
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel


def job(seed: int, prompt: str = "a fox") -> Job:
    return Job(
        prompt=prompt,
        negative_prompt="",
        seeds=(seed,),
        prompt_weight=1.0,
        steps=2,
        width=32,
        height=32,
        output_format="png",
    )


class BrokenDevice(GatedModel):
    """A device that serves its warm-up, then fails every call once ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        if self.broken:
            self.calls.append(list(jobs))
            self.entered.set()
            self.gate.wait(timeout=30)
            raise RuntimeError("simulated: device lost")
        return super().generate(jobs, progress)


def engine(*models: GatedModel, **settings: object) -> Engine:
    first, *rest = models
    return Engine(first, Settings(**settings), rest).start(lambda: job(0, "warm-up"))


def test_devices_lists_each_replicas_settings() -> None:
    assert devices.replica_settings(Settings()) == [Settings()]
    two = devices.replica_settings(Settings(devices="cpu, cpu"))
    assert [s.device for s in two] == ["cpu", "cpu"] and two[0] is not two[1]
    named = devices.replica_settings(Settings(devices="cuda:0,cuda:1", model="mock"))
    assert [s.device for s in named] == ["cuda:0", "cuda:1"]
    assert all(s.model == "mock" for s in named)


def test_auto_takes_every_visible_gpu_or_falls_back_to_one_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(devices, "visible_gpus", lambda: 3)
    assert devices.device_names(Settings(devices="auto")) == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setattr(devices, "visible_gpus", lambda: 0)
    assert devices.device_names(Settings(devices="auto", device="cpu")) == ["cpu"]


def test_a_bad_device_name_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"'gpu1' is not a device.*cuda:0,cuda:1"):
        Settings(devices="cuda:0,gpu1")


def test_devices_cpu_cpu_builds_two_replicas_that_answer_like_one() -> None:
    service = Service.from_settings(Settings(devices="cpu,cpu")).start()
    try:
        assert len(service.engine.replicas) == 2
        assert service.engine.replicas[0] is not service.engine.replicas[1]
        one = Service.from_settings(Settings()).start()
        request = {"prompt": "a lighthouse", "seed": 7, "width": 64, "height": 64, "steps": 3}
        assert service.generate(request).images[0].data == one.generate(request).images[0].data
        one.stop()
    finally:
        service.stop()


def test_a_batch_goes_to_whichever_device_is_free_and_each_request_is_served_once() -> None:
    first, second = GatedModel(), GatedModel()
    served = engine(first, second, max_batch_size=2, max_wait_ms=0)
    solo = engine(GatedModel(), max_batch_size=1)
    first.calls.clear(), second.calls.clear()
    first.hold()  # the first device is busy with its first batch until released
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(served.run, job(seed)) for seed in range(12)]
        assert first.entered.wait(10)
        # While the first device holds one batch (at most 2), the second serves the other 10.
        deadline = time.monotonic() + 30
        while sum(f.done() for f in futures) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        done_while_held = sum(f.done() for f in futures)
        first.gate.set()
        results = [f.result(timeout=30) for f in futures]
    assert done_while_held >= 10 and len(first.calls) == 1
    jobs = [j for call in first.calls + second.calls for j in call]
    assert sorted(j.seeds[0] for j in jobs) == list(range(12))  # each job ran exactly once
    for seed, result in enumerate(results):
        assert result.images[0].data == solo.run(job(seed)).images[0].data
    served.stop(), solo.stop()


def test_a_failing_device_fails_only_the_batches_it_ran() -> None:
    healthy, broken = GatedModel(), BrokenDevice()
    served = engine(healthy, broken, max_batch_size=1, max_wait_ms=0)
    healthy.calls.clear(), broken.calls.clear()
    broken.broken = True
    broken.hold()  # its failing call waits, so both devices surely run batches
    outcomes: dict[int, object] = {}

    def run(seed: int) -> None:
        try:
            outcomes[seed] = served.run(job(seed)).images[0].data
        except ModelError as exc:
            outcomes[seed] = exc

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(16)]
    for thread in threads:
        thread.start()
    assert broken.entered.wait(10)
    deadline = time.monotonic() + 30
    while len(outcomes) < 15 and time.monotonic() < deadline:  # the healthy device serves on
        time.sleep(0.01)
    broken.gate.set()
    for thread in threads:
        thread.join(30)
    failed = {j.seeds[0] for call in broken.calls for j in call}
    succeeded = {j.seeds[0] for call in healthy.calls for j in call}
    assert failed and succeeded and not failed & succeeded
    assert failed | succeeded == set(range(16))
    assert {s for s, o in outcomes.items() if isinstance(o, ModelError)} == failed
    assert served.stats.failed_batches == len(broken.calls)
    served.stop()
