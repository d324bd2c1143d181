"""``python -m tools.bench.loop``: event-loop CPU per POST /predict, without sockets or a client.

At a few concurrent clients the accelerator idles while the event loop turns a batch's answers
into the next requests, so the loop's own CPU per request is what the 8-client figure of
``tools.bench.accel`` depends on, and it is hard to see there: wrk, the encoding threads and the
loop share the cores. Here one fresh interpreter per run builds the app (the stand-in model at no
cost per call: ``a=0,b=0``), drives it through ASGI directly, ``--concurrency`` requests at a time,
and reads the CPU time of the loop's own thread (``time.thread_time``) per request. Runs of each
checkout alternate (``--before DIR``: a ``git worktree`` of the code before a change), and the
median of ``--repeats`` counts, so the two are compared under the same load.

    python -m tools.bench.loop --before ../before --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.bench.processes import ROOT

#: Run in a fresh interpreter in the checkout measured: prints loop CPU ms per request.
CHILD = """
import asyncio, json, sys, time
import uvloop
from inference.http.app import create_app
from inference.settings import get_settings

fmt, requests, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
BODY = json.dumps({"prompt": "a lighthouse", "seed": 1234, "width": 512, "height": 512,
                   "output_format": fmt}).encode()
SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
         "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/predict",
         "raw_path": b"/predict", "query_string": b"", "root_path": "",
         "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                     (b"content-length", str(len(BODY)).encode())],
         "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def one(app):
    answered = asyncio.Event()
    sent, status = False, []

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif not message.get("more_body"):
            answered.set()

    await app({**SCOPE, "state": {}}, receive, send)
    return status[0]


async def main():
    app = create_app(get_settings())
    async with app.router.lifespan_context(app):
        while await one(app) != 200:  # the model loads in a thread
            await asyncio.sleep(0.1)
        for _ in range(100):
            await one(app)
        started = time.thread_time()
        rounds = requests // concurrency
        for _ in range(rounds):
            codes = await asyncio.gather(*(one(app) for _ in range(concurrency)))
            assert set(codes) == {200}, codes
        print(json.dumps((time.thread_time() - started) * 1000 / (rounds * concurrency)))


uvloop.run(main())
"""

ENV = {
    "MODEL": "tools.bench.standin:StandInModel",
    "STANDIN_COST": "a=0,b=0",
    "MAX_BATCH_SIZE": "8",
    "MAX_QUEUE_SIZE": "4096",
    "RESULT_CACHE_MB": "0",
    "LOG_LEVEL": "warning",
    "UI": "false",
}


def one_run(checkout: Path, fmt: str, requests: int, concurrency: int) -> float:
    """Loop-thread CPU ms per request of one fresh interpreter serving ``checkout``'s code."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, fmt, str(requests), str(concurrency)],
        cwd=checkout,
        env={**os.environ, **ENV, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the run in {checkout} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.loop", description=__doc__)
    parser.add_argument("--before", type=Path, help="a checkout of the code before a change")
    parser.add_argument("--formats", default="jpeg,png")
    parser.add_argument("--requests", type=int, default=2000, help="measured, per run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="runs per checkout and format")
    args = parser.parse_args(argv)
    checkouts = {"ours": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    print("| format | code | loop CPU ms per request (median) | each run | vs before |")
    print("|---|---|---:|---|---:|")
    for fmt in args.formats.split(","):
        runs: dict[str, list[float]] = {name: [] for name in checkouts}
        for _ in range(args.repeats):  # alternate, so both see the same background load
            for name, checkout in checkouts.items():
                runs[name].append(one_run(checkout, fmt, args.requests, args.concurrency))
        medians = {name: statistics.median(values) for name, values in runs.items()}
        for name, values in runs.items():
            each = ", ".join(f"{v:.3f}" for v in values)
            ratio = f"{medians[name] / medians['before']:.2f}x" if "before" in medians else ""
            print(f"| {fmt} | {name} | {medians[name]:.3f} | {each} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
