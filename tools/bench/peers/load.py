"""Load driver: POST one JSON body N times at a fixed concurrency and print what happened.

It runs as its own process so the client's event loop, JSON parsing and base64 decoding never
share a core's time slices or a GIL with the server under test. A fixed number of workers each
keep one request in flight (closed loop), after a warm-up round that opens the connections and is
not counted. Output: one JSON object on stdout with the wall time, per-request latencies, the
batch size and server-side timings each response reported, the errors, and the CPU time this
client spent (on a small machine a busy client, not the server, can be what limits a level).

Run: ``python tools/bench/peers/load.py --url http://127.0.0.1:8000/predict --requests 200
--concurrency 32 --payload '{"width": 64, "height": 64}'``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

import httpx


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    latency = time.perf_counter() - started
    if response.status_code != 200:
        return {"ok": False, "error": f"HTTP {response.status_code}: {response.text[:200]}"}
    data = response.json()
    record: dict[str, Any] = {
        "ok": True,
        "latency_s": latency,
        "images": len(data.get("images", [])),
        "batch_size": data.get("batch_size"),
    }
    if isinstance(data.get("timings"), dict):
        record["timings"] = data["timings"]
    return record


async def drive(
    url: str, body: dict[str, Any], requests: int, concurrency: int, timeout_s: float
) -> dict[str, Any]:
    """Warm up with one round of ``concurrency`` requests, then run ``requests`` and time them."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        await asyncio.gather(*(_one(client, url, body) for _ in range(concurrency)))
        records: list[dict[str, Any]] = []
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                records.append(await _one(client, url, body))

        cpu_started = _cpu_s()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
        wall = time.perf_counter() - started
        cpu = _cpu_s() - cpu_started
    ok = [r for r in records if r["ok"]]
    errors = [r["error"] for r in records if not r["ok"]]
    return {
        "wall_s": wall,
        "requests": len(records),
        "images": sum(r["images"] for r in ok),
        "latencies_s": [r["latency_s"] for r in ok],
        "batch_sizes": [r["batch_size"] for r in ok if r.get("batch_size")],
        "timings": [r["timings"] for r in ok if "timings" in r],
        # Per request: what the client waited beyond the model call the server reports.
        "overheads_ms": [
            r["latency_s"] * 1000 - r["timings"]["inference_ms"] for r in ok if "timings" in r
        ],
        "client_cpu_s": cpu,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--payload", default="{}", help="the JSON request body")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        parser.error(
            f"--requests and --concurrency must be >= 1, got {args.requests}, {args.concurrency}"
        )
    result = asyncio.run(
        drive(args.url, json.loads(args.payload), args.requests, args.concurrency, args.timeout_s)
    )
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
