"""The event loop never waits on request I/O: 7 MB images through every protocol, and an image
URL whose host answers after 5 s, while a probe on the server's loop measures each stall and
GET /health is timed from outside (issue 21, "one async seam").

The server is ``python -m inference serve`` started through ``tests/lag_probe.py``, whose task
on the loop prints every wake-up more than 5 ms late with the CPU the loop's own thread spent
meanwhile. Before the seam, Replicate's and Cog's creation decoded on the loop (~180 ms of the
loop's CPU per request) and a slow image host froze every request for 5 s; before large JSON
bodies were parsed off the loop and Replicate's echoed input written once, a data: URI cost
the loop ~30 ms of CPU per request.

Robust on a loaded 2-core machine: what the loop computes itself is asserted at the issue's
20 ms, for every front door. The wall-clock lateness and /health's time also hold the waits of
a machine too busy to schedule the server and of workers holding the GIL (a C call such as a
9 MB JSON parse does not let go of it), so their worst is asserted at what only a blocking wait
on the loop reaches (the slow host's 5 s), and /health's median at the issue's 50 ms. Run with
``-s`` for the figures (``figures``).
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from inference.settings import Settings
from tests.conftest import make_service
from tests.servers import ROOT, free_port, output, server_process

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="one monotonic clock")

#: CPU the loop's own thread may spend in one stall (issue 21: the loop never stalls > 20 ms).
MAX_LOOP_CPU_MS = 20.0
#: Wall-clock lateness of the loop, and a concurrent GET /health, that only a blocking wait on
#: the loop reaches (the slow host's 5 s before the seam). Below it, wall-clock figures on a
#: shared 2-core machine measure its load and the GIL as much as the server.
MAX_STALL_MS = 1000.0
#: What most /health answers take while the images go through (issue 21: within 50 ms).
MAX_HEALTH_MEDIAN_MS = 50.0
SLOW_HOST_S = 5.0
SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 7}

Call = Callable[[httpx.Client], httpx.Response]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def seven_megabyte_png() -> bytes:
    """Noise does not compress: 1536 x 1536 RGB is a 7 MB PNG."""
    data = png(np.random.default_rng(0).integers(0, 256, (1536, 1536, 3), dtype=np.uint8))
    assert 6_500_000 < len(data) < 10_000_000, len(data)
    return data


class _SlowImages(http.server.BaseHTTPRequestHandler):
    image = png(np.full((64, 64, 3), 120, dtype=np.uint8))

    def do_GET(self) -> None:
        time.sleep(SLOW_HOST_S)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(self.image)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def slow_host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowImages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/slow.png"
    server.shutdown()
    server.server_close()


def image_requests(url: str, image: bytes) -> dict[str, Call]:
    """One request per front door that carries an image, by name."""
    text = base64.b64encode(image).decode("ascii")
    uri = "data:image/png;base64," + text
    form = {k: str(v) for k, v in SMALL.items()}
    edit = {"prompt": "a fox", "size": "256x256"}
    return {
        "native json": lambda c: c.post(f"{url}/predict", json={**SMALL, "image": text}),
        "native multipart": lambda c: c.post(f"{url}/predict", data=form, files={"image": image}),
        "openai edits": lambda c: c.post(
            f"{url}/v1/images/edits", data=edit, files={"image": ("a.png", image, "image/png")}
        ),
        "replicate data uri": lambda c: c.post(
            f"{url}/v1/predictions", json={"input": {**SMALL, "image": uri}}
        ),
        "cog data uri": lambda c: c.post(
            f"{url}/predictions", json={"input": {**SMALL, "image": uri}}
        ),
    }


def url_requests(url: str, image_url: str) -> dict[str, Call]:
    """Replicate's and Cog's usual way to send an image: its URL."""
    given = {"input": {**SMALL, "image": image_url}}
    return {
        "replicate url": lambda c: c.post(f"{url}/v1/predictions", json=given),
        "cog url": lambda c: c.post(f"{url}/predictions", json=given),
    }


@pytest.fixture(scope="module")
def server(slow_host: str) -> Iterator[tuple[str, Any]]:
    """The probed server, each front door warmed up once (first-use imports are not the
    seam's to measure)."""
    port = free_port()
    env = {"IMAGE_URL_HOSTS": "127.0.0.1", "IMAGE_URL_ALLOW_PRIVATE": "1", "LOG_LEVEL": "warning"}
    command = [sys.executable, str(ROOT / "tests" / "lag_probe.py"), "serve", "--port", str(port)]
    with server_process(command, port=port, env=env, ready_path="/ready") as (url, process):
        small = png(np.full((64, 64, 3), 90, dtype=np.uint8))
        with httpx.Client(timeout=60) as client:
            for call in image_requests(url, small).values():
                assert call(client).is_success
        yield url, process


#: Times GET /health every 20 ms until a line arrives on stdin (or for argv[2] seconds), and
#: prints each time in ms: a process of its own, so the test's threads that encode 9 MB bodies
#: never hold its GIL.
HEALTH_WATCHER = """
import sys, threading, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: sys.stdin.readline() and stop.set(), daemon=True).start()
until = time.monotonic() + seconds
with httpx.Client(timeout=30) as client:
    while not stop.is_set() and time.monotonic() < until:
        started = time.perf_counter()
        assert client.get(url + "/health").status_code == 200
        print(round((time.perf_counter() - started) * 1000, 2), flush=True)
        time.sleep(0.02)
"""


def health_watcher(url: str, seconds: str = "120") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HEALTH_WATCHER, url, seconds],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def under_load(url: str, process: Any, calls: dict[str, Call]) -> dict[str, Any]:
    """Send ``calls`` at once while /health is timed: the loop's stalls in that window as
    (late ms, loop CPU ms), and /health's times."""

    watcher = health_watcher(url)
    first = watcher.stdout.readline() if watcher.stdout else ""  # it runs: start the load
    start = time.monotonic()
    with ThreadPoolExecutor(len(calls)) as pool, httpx.Client(timeout=60) as client:
        answers = dict(zip(calls, pool.map(lambda call: call(client), calls.values()), strict=True))
    end = time.monotonic()
    busy, _ = watcher.communicate("stop\n", timeout=60)
    time.sleep(0.1)  # the probe's last lines reach the log
    failed = {k: (a.status_code, a.text[:300]) for k, a in answers.items() if not a.is_success}
    assert not failed, failed
    stalls = []
    for line in output(process).splitlines():
        if line.startswith("loop-lag "):
            _, at, late, cpu = line.split()
            if start <= float(at) <= end:
                stalls.append((float(late), float(cpu)))
    health = [float(ms) for ms in (first + busy).split()]
    return {"stalls": stalls, "health": health, "seconds": end - start}


def figures(name: str, seen: dict[str, Any]) -> str:
    """One line of the figures the report quotes: the loop's worst stall (wall and CPU) and
    /health's worst and median time."""
    stalls, health = seen["stalls"], seen["health"]
    late = max((late for late, _ in stalls), default=0.0)
    cpu = max((cpu for _, cpu in stalls), default=0.0)
    return (
        f"{name:20} loop stall max {late:6.1f} ms wall, {cpu:5.1f} ms CPU; "
        f"/health max {max(health):6.1f} ms, median {statistics.median(health):5.1f} ms"
    )


def assert_bounds(seen: dict[str, Any]) -> None:
    stalls = seen["stalls"]
    assert max((cpu for _, cpu in stalls), default=0.0) <= MAX_LOOP_CPU_MS, stalls
    assert max((late for late, _ in stalls), default=0.0) <= MAX_STALL_MS, stalls
    assert max(seen["health"]) <= MAX_STALL_MS, seen["health"]
    assert statistics.median(seen["health"]) <= MAX_HEALTH_MEDIAN_MS, seen["health"]


def test_images_and_a_slow_image_host_never_stall_the_loop(
    server: tuple[str, Any], slow_host: str
) -> None:
    """Every front door at once, two of them waiting on the slow host meanwhile."""
    url, process = server
    calls = image_requests(url, seven_megabyte_png())
    seen = under_load(url, process, {**calls, **url_requests(url, slow_host)})
    print(figures("all at once", seen))
    assert seen["seconds"] >= SLOW_HOST_S  # the slow host's requests ran while we watched
    assert len(seen["health"]) >= 50
    assert_bounds(seen)


@pytest.mark.parametrize(
    "door",
    ["native json", "native multipart", "openai edits", "replicate data uri", "cog data uri"],
)
def test_each_front_door_alone(server: tuple[str, Any], door: str) -> None:
    """Each door by itself, three times: its own figures, and predictions already stored
    (their inputs echoed by Replicate) must not add to the next one's cost."""
    url, process = server
    call = image_requests(url, seven_megabyte_png())[door]
    for _ in range(3):
        seen = under_load(url, process, {door: call})
        print(figures(door, seen))
        assert_bounds(seen)


def test_validation_with_images_runs_in_the_bounded_pool_and_nowhere_else() -> None:
    """``Service.job_async``: requests with images in ``MAX_BLOCKING_WORKERS`` threads of the
    service's own pool, at most that many at once; requests without images on the loop."""
    service = make_service(max_blocking_workers=2)
    threads: list[str] = []
    running, most = 0, 0
    lock = threading.Lock()
    validate = service.validator.job

    def watched(request: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.append(threading.current_thread().name)
        time.sleep(0.2)
        with lock:
            running -= 1
        return validate(request)

    service.validator.job = watched  # type: ignore[method-assign]
    image = {**SMALL, "image": png(np.full((64, 64, 3), 90, dtype=np.uint8))}

    async def validate_all() -> None:
        await asyncio.gather(*(service.job_async(image) for _ in range(5)))
        await service.job_async(SMALL)

    try:
        asyncio.run(validate_all())
    finally:
        service.stop()
    assert Settings().max_blocking_workers == 8
    assert all(name.startswith("request-io") for name in threads[:5]), threads
    assert threads[5] == "MainThread" and most == 2
