"""``python -m tools.bench_routing --baseline DIR``: what routing costs on /predict.

Issue 23 asks that a server without a registry (a registry of one) answer /predict as fast as
before registries. This starts two servers side by side on the mock model, this tree's and
the one in ``--baseline`` (a checkout of an older commit, e.g. ``git worktree add /tmp/base
main``), and sends them the same small requests in alternating rounds, so both see the same
machine load; it prints each one's median and p90 latency and the ratio of medians. The
result cache is off, so every request runs the model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
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
    env = {**os.environ, "PYTHONPATH": str(tree), "RESULT_CACHE_MB": "0", "UI": "false"}
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
