"""Load from ``wrk``, a compiled load generator, and the CPU time of the server under test.

At tens of 700 KB responses a second, a Python client (httpx, JSON decoding) spends 3-20 ms of
CPU per request: on a small host that is a core the server under test no longer has, so the
client would decide the result. ``wrk`` (C, epoll) spends tens of microseconds per request, and
its Lua hook only finds ``"batch_size":`` in each body with a plain search. The client's own CPU
is still measured (its rusage) and reported next to the server's.

The server's CPU is the utime + stime of every process in its process group (LitServe runs its
API server and workers as children), read from /proc before and after the measured run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: wrk's Lua: a fixed POST, per-thread counts of responses, of 1/batch_size and of responses in
#: each second of the clock (``os.time()``), a JSON summary.
SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%(body)s]==]
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; inverse_batch = 0; bad = 0; per_second = {} end
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1; return end
  local at = string.find(body, '"batch_size":', 1, true)
  if at then
    ok = ok + 1
    local now = os.time()
    per_second[now] = (per_second[now] or 0) + 1
    inverse_batch = inverse_batch + 1 / tonumber(string.match(body, "^%%d+", at + 13))
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local ok_total, inverse_total, bad_total, seconds = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    inverse_total = inverse_total + t:get("inverse_batch")
    bad_total = bad_total + t:get("bad")
    for second, count in pairs(t:get("per_second")) do
      seconds[second] = (seconds[second] or 0) + count
    end
  end
  local counts = {}
  for second, count in pairs(seconds) do
    table.insert(counts, string.format('"%%d": %%d', second, count))
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %%d, "duration_us": %%d, "ok": %%d, "inverse_batch": %%.6f, ' ..
    '"bad": %%d, "socket_errors": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d, ' ..
    '"per_second": {%%s}}\n',
    summary.requests, summary.duration, ok_total, inverse_total, bad_total,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    table.concat(counts, ", ")))
end
"""


@dataclass
class WrkResult:
    requests: int
    ok: int
    errors: int
    wall_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    client_cpu_s: float
    #: Responses per second over the whole seconds of the clock after the first two (the
    #: first is partial, the second still holds the clients' start) and before the last
    #: (partial): the server's steady rate, free of the run's ends. None without ``lead_s``
    #: or when no such second passed.
    steady_per_s: float | None = None


#: Seconds a run spends outside its steady window (``WrkResult.steady_per_s``): the first
#: partial second, one more for the start, the last partial one.
STEADY_LEAD_S = 3


def steady_rate(per_second: dict[int, int]) -> float | None:
    """Mean responses per whole clock second, without the first two and the last; a second
    in between with no response counts as 0."""
    if not per_second:
        return None
    first, last = min(per_second), max(per_second)
    inner = range(first + 2, last)
    if not inner:
        return None
    return sum(per_second.get(second, 0) for second in inner) / len(inner)


def wrk_path() -> str:
    """The wrk binary, or an error that says how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError(
            "wrk is not on PATH: run scripts/install-system-deps.sh (apt-get install wrk)"
        )
    return found


def run_wrk(
    url: str, body: dict[str, Any], connections: int, seconds: float, lead_s: float = 0
) -> WrkResult:
    """``connections`` clients, each with one request in flight, for ``seconds`` (closed loop).

    ``lead_s`` (``STEADY_LEAD_S``): run that much longer, so that ``steady_per_s`` covers about
    ``seconds`` whole seconds of steady load. A closed loop's first call waits for its clients
    to connect and its last one is cut off: over a 4 s run at 64 clients those ends cost
    ~3% of the count (a server at 0.99 of ideal in its own trace read 0.96).
    """
    seconds += lead_s
    text = json.dumps(body)
    if "]==]" in text:
        raise ValueError("the request body cannot contain ]==] (it is a Lua long string)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(SCRIPT % {"body": text})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            [
                wrk_path(),
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout=120s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 180,
        )
    finally:
        os.unlink(script.name)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]}{done.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        requests=data["requests"],
        ok=data["ok"],
        errors=data["bad"] + data["socket_errors"],
        wall_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_batch=data["ok"] / data["inverse_batch"] if data["inverse_batch"] else float("nan"),
        client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        steady_per_s=(
            steady_rate({int(k): v for k, v in data["per_second"].items()}) if lead_s else None
        ),
    )


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in process group ``pgid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        # After the command name: state ppid pgrp session ... utime (12th) stime (13th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks
