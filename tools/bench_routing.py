"""``python -m tools.bench_routing --baseline DIR``: what routing costs on /predict.

Issue 23 asks that a server without a registry (a registry of one) answer /predict as fast as
before registries. This starts two servers side by side on the mock model, this tree's and
the one in ``--baseline`` (a checkout of an older commit, e.g. ``git worktree add /tmp/base
main``), and sends them the same small requests in alternating rounds, so both see the same
machine load; it prints each one's median and p90 latency and the ratio of medians. The
result cache is off, so every request runs the model, and MAX_WAIT_MS=0, so no batching wait
(10 ms by default) hides what routing costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.servers import free_port, running

ROOT = Path(__file__).resolve().parent.parent
BODY = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 1}


@contextmanager
def server(tree: Path) -> Iterator[str]:
    """``python -m inference serve`` of the package in ``tree``, once ready."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "RESULT_CACHE_MB": "0",
        "MAX_WAIT_MS": "0",
        "UI": "false",
    }
    env.pop("MODELS_FILE", None)
    command = [sys.executable, "-m", "inference", "serve", "--port", str(port)]
    with running(command, port=port, env=env, cwd=tree, ready_path="/ready") as url:
        yield url


def measure(urls: dict[str, str], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Latency (ms) of each request to each server, the servers taking turns each round."""
    times: dict[str, list[float]] = {name: [] for name in urls}
    clients = {name: httpx.Client(base_url=url, timeout=60) for name, url in urls.items()}
    try:
        for client in clients.values():  # warm both: connections, first batches
            for _ in range(20):
                client.post("/predict", json=BODY).raise_for_status()
        for round_ in range(rounds):
            order = list(clients) if round_ % 2 == 0 else list(reversed(clients))
            for name in order:
                for _ in range(per_round):
                    answer = clients[name].post("/predict", json=BODY)
                    answer.raise_for_status()
                    times[name].append(answer.elapsed.total_seconds() * 1000)
    finally:
        for client in clients.values():
            client.close()
    return times


def routing_cost_us(repeats: int = 20_000) -> float:
    """Microseconds one request spends in routing alone (``Fleet.serving`` entered and left,
    a registry of one), in this process: a number the machine's load barely moves."""
    from inference.fleet import Fleet
    from inference.service import Service
    from inference.settings import Settings

    fleet = Fleet.around(Service.from_settings(Settings()))  # never started: nothing runs

    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            async with fleet.serving("any-name", "a-session"):
                pass
        return (time.perf_counter() - start) / repeats * 1e6

    try:
        return asyncio.run(loop())
    finally:
        fleet.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout to compare to")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=25)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        urls = {
            "baseline": stack.enter_context(server(args.baseline.resolve())),
            "this tree": stack.enter_context(server(ROOT)),
        }
        times = measure(urls, args.rounds, args.per_round)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print("| server | requests | median ms | p90 ms |")
    print("|---|---|---|---|")
    for name, values in times.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"| {name} | {len(values)} | {medians[name]:.3f} | {p90:.3f} |")
    ratio = medians["this tree"] / medians["baseline"]
    print(f"\nratio of medians (this tree / baseline): {ratio:.3f}")
    print(f"routing alone, in process: {routing_cost_us():.1f} us per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
