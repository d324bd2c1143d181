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
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: wrk's Lua: a fixed POST, per-thread counts of responses and of 1/batch_size, each good
#: response's time (CLOCK_MONOTONIC through LuaJIT's FFI), a JSON summary.
SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local clock = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%(body)s]==]
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; inverse_batch = 0; bad = 0; stamps = {} end
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1; return end
  local at = string.find(body, '"batch_size":', 1, true)
  if at then
    ok = ok + 1
    stamps[ok] = now()
    inverse_batch = inverse_batch + 1 / tonumber(string.match(body, "^%%d+", at + 13))
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local ok_total, inverse_total, bad_total, times = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    inverse_total = inverse_total + t:get("inverse_batch")
    bad_total = bad_total + t:get("bad")
    for _, stamp in ipairs(t:get("stamps")) do
      table.insert(times, string.format("%%.6f", stamp))
    end
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %%d, "duration_us": %%d, "ok": %%d, "inverse_batch": %%.6f, ' ..
    '"bad": %%d, "socket_errors": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d, ' ..
    '"stamps": [%%s]}\n',
    summary.requests, summary.duration, ok_total, inverse_total, bad_total,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    table.concat(times, ", ")))
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
    #: Responses per second in steady load: the slope of the count of responses against
    #: their times, from ``STEADY_START_S`` after the first response to ``STEADY_END_S``
    #: before the last (``steady_rate``). None without ``lead_s``.
    steady_per_s: float | None = None


#: The part of a run left out of its steady window (``steady_rate``): its start, while the
#: clients connect and the first calls fill, and its end, cut off mid-call.
STEADY_START_S = 2.0
STEADY_END_S = 1.0
#: What ``run_wrk``'s callers add to a run for that window.
STEADY_LEAD_S = STEADY_START_S + STEADY_END_S


def steady_rate(stamps: list[float]) -> float | None:
    """Responses per second in the window between the run's start and end: the slope of a
    least-squares line through (time, count). Batches answer eight clients at once, and a
    count over a fixed window would be off by up to a batch at each edge (+-2 images/s over
    4 s at 66 images/s); the fitted slope of that staircase is not. None under 2 responses."""
    if not stamps:
        return None
    first, last = min(stamps), max(stamps)
    inside = sorted(t for t in stamps if first + STEADY_START_S <= t <= last - STEADY_END_S)
    if len(inside) < 2 or inside[-1] == inside[0]:
        return None
    return statistics.linear_regression(inside, range(len(inside))).slope


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
    ``seconds`` of steady load. A closed loop's first call waits for its clients
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
        steady_per_s=steady_rate(data["stamps"]) if lead_s else None,
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
