"""Load and faults over real HTTP, against ``python -m inference serve`` as a subprocess:
bursts, timeouts, SIGTERM with work in flight, an open UI stream at shutdown, a batch job
killed with SIGKILL, and a soak whose memory must stay flat."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, inference_process, stopped_output

QUIET = {"UI": "false", "LOG_LEVEL": "warning"}
QUICK = {"width": 64, "height": 64, "steps": 2}
#: Served by a model that sleeps 0.05 s a step (tests/fakes.py), so a request takes a known
#: time on any machine: LONG about 2.5 s.
SLEEPY = {"MODEL": "tests.fakes:SleepyModel"}
LONG = {"width": 64, "height": 64, "steps": 50}


def post_all(url: str, bodies: list[dict], timeout: float = 60) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict", json=b) for b in bodies))

    return asyncio.run(run())


def depth_in(metrics: str) -> float:
    lines = metrics.splitlines()
    return float(next(ln.split()[1] for ln in lines if ln.startswith("inference_queue_depth ")))


def queue_depth(url: str) -> float:
    return depth_in(httpx.get(f"{url}/metrics").text)


async def until_queued(client: httpx.AsyncClient, depth: int) -> None:
    """Wait until ``depth`` requests wait behind the one running (MAX_BATCH_SIZE=1): every
    request has reached the server, however slow the machine. The deadline guards a hang."""
    deadline = time.monotonic() + 60
    while depth_in((await client.get("/metrics")).text) < depth:
        assert time.monotonic() < deadline, f"{depth} requests never queued"
        await asyncio.sleep(0.02)


def test_a_burst_against_a_small_queue_gets_only_200_or_503_then_recovers() -> None:
    env = {**QUIET, "MAX_QUEUE_SIZE": "4", "MAX_BATCH_SIZE": "2"}
    with inference_process(env) as (url, _):
        responses = post_all(url, [{**QUICK, "steps": 8, "seed": i} for i in range(200)])
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
        for refused in (r for r in responses if r.status_code == 503):
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "overloaded"
        assert httpx.post(f"{url}/predict", json=QUICK, timeout=30).status_code == 200
        assert queue_depth(url) == 0


def test_requests_past_the_timeout_get_504_and_leave_nothing_queued() -> None:
    env = {**QUIET, **SLEEPY, "REQUEST_TIMEOUT_S": "0.3", "MAX_BATCH_SIZE": "1"}
    with inference_process(env) as (url, _):
        # ~5 s each: far past the timeout even when a loaded machine delays the event loop
        responses = post_all(url, [{**LONG, "seed": i} for i in range(3)])
        assert [r.status_code for r in responses] == [504] * 3
        assert "REQUEST_TIMEOUT_S" in responses[0].json()["error"]["message"]
        deadline = time.monotonic() + 30  # only a guard: the abandoned batch ends at a step
        while queue_depth(url) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue_depth(url) == 0
        assert httpx.post(f"{url}/predict", json=QUICK, timeout=30).status_code == 200


def test_sigterm_drains_in_flight_work_and_refuses_new_work_in_json() -> None:
    env = {**QUIET, **SLEEPY, "MAX_BATCH_SIZE": "1", "SHUTDOWN_GRACE_S": "20"}
    with inference_process(env) as (url, process):

        async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                work = [
                    asyncio.ensure_future(client.post("/predict", json={**LONG, "seed": i}))
                    for i in range(3)
                ]
                await until_queued(client, 2)  # one running, two queued
                process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 30  # only a guard: SIGTERM starts the drain
                while (ready := await client.get("/ready")).status_code == 200:
                    assert time.monotonic() < deadline, "SIGTERM never started the drain"
                    await asyncio.sleep(0.02)
                refused = await client.post("/predict", json=QUICK)
                return await asyncio.gather(*work), ready, refused

        in_flight, ready, refused = asyncio.run(scenario())
        assert ready.status_code == 503 and ready.json()["phase"] == "draining"
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert "shutting down" in refused.json()["error"]["message"]
        assert [r.status_code for r in in_flight] == [200, 200, 200]
        output = stopped_output(process, 30)
        assert process.returncode is not None
        assert "Traceback" not in output and "CancelledError" not in output, output


def test_past_the_grace_period_in_flight_work_fails_as_json_503() -> None:
    env = {**QUIET, **SLEEPY, "MAX_BATCH_SIZE": "1", "SHUTDOWN_GRACE_S": "0.3"}
    with inference_process(env) as (url, process):

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                work = [
                    asyncio.ensure_future(client.post("/predict", json={**LONG, "seed": i}))
                    for i in range(2)
                ]
                await until_queued(client, 1)  # one running, one queued
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*work)

        # 503s, not 200s: the grace ended both requests instead of waiting them out
        responses = asyncio.run(scenario())
        for response in responses:
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["type"] == "not_ready"
        output = stopped_output(process, 30)
        assert "Traceback" not in output and "CancelledError" not in output, output


def test_an_open_ui_stream_does_not_hold_the_shutdown() -> None:
    pytest.importorskip("gradio")
    with (
        inference_process({"UI": "true", "LOG_LEVEL": "warning"}) as (url, process),
        httpx.stream("GET", f"{url}/ui/gradio_api/heartbeat/test-session", timeout=30) as s,
    ):
        assert s.status_code == 200
        process.send_signal(signal.SIGTERM)
        # The stream never ends by itself, so a server that waited for it would never exit
        # while it is open: the deadline guards that hang, it measures nothing
        output = stopped_output(process, 60)
    assert "Traceback" not in output, output


def test_a_batch_job_killed_with_sigkill_resumes_with_every_image_once(tmp_path: Path) -> None:
    lines = [{**QUICK, "steps": 30, "width": 256, "height": 256, "seed": i} for i in range(12)]
    source = tmp_path / "job.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "inference", "batch", str(source), "--output-dir", str(out)]
    env = {**os.environ, "MAX_BATCH_SIZE": "1", "LOG_LEVEL": "warning"}
    job = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while len(list(out.glob("*.png"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    job.kill()
    job.wait()
    done_before = len(list(out.glob("*.png")))
    assert 3 <= done_before < len(lines)
    again = subprocess.run([*command, "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    redone = len(lines) - done_before
    summary = f"{len(lines)} requests: {redone} generated, {done_before} already done, 0 failed"
    assert summary in again.stdout, again.stdout
    records = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
    assert {r["status"] for r in records} <= {"ok", "skipped"}
    images = sorted(p.name for p in out.glob("*.png"))
    assert len(images) == len(lines) == len({name for r in records for name in r["outputs"]})
    assert not list(out.glob(".*.partial"))


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))


def soak(seconds: float) -> tuple[dict[int, int], int, int]:
    """Mixed valid and invalid traffic; (statuses, RSS after warm-up, RSS at the end) in KiB.

    Every round has new seeds and prompts, so results go through the model and fill the result
    cache (kept small, so that its bound is reached during the warm-up) and the prompt caches.
    """
    bodies = [
        QUICK,
        {**QUICK, "prompt": "a fox", "num_outputs": 2},
        {"width": 1004},
        {"seed": True},
        {"steps": 10_000},
        {"unknown": 1},
    ]
    statuses: dict[int, int] = {}
    rounds = 0
    with (
        inference_process({**QUIET, "RESULT_CACHE_MB": "1"}) as (url, process),
        httpx.Client(base_url=url, timeout=30) as client,
    ):

        def round_trip() -> None:
            nonlocal rounds
            rounds += 1
            for body in bodies:
                varied = {"seed": rounds, "prompt": f"a fox, take {rounds % 40}"}
                code = client.post("/predict", json={**varied, **body}).status_code
                statuses[code] = statuses.get(code, 0) + 1
            client.post(
                "/predict", content=b"{broken", headers={"content-type": "application/json"}
            )

        for _ in range(100):  # warm-up: caches and allocator reach their steady size
            round_trip()
        start = rss_kib(process.pid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            round_trip()
        end = rss_kib(process.pid)
    return statuses, start, end


def test_a_short_soak_keeps_memory_flat() -> None:
    statuses, start, end = soak(seconds=6)
    assert set(statuses) == {200, 422}, statuses
    assert end - start < 20 * 1024, (start, end)


@pytest.mark.soak
def test_a_minute_of_mixed_traffic_keeps_memory_flat() -> None:
    statuses, start, end = soak(seconds=60)
    print(f"soak: {statuses}, RSS {start} -> {end} KiB")
    assert set(statuses) == {200, 422}, statuses
    assert end - start < 20 * 1024, (start, end)
