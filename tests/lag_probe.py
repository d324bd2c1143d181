"""``python tests/lag_probe.py serve ...``: ``python -m inference serve`` with a loop-lag probe.

A task on the server's own event loop sleeps ``PERIOD_S`` again and again and measures how late
it wakes: the wait every other request on the server shared. Each wake later than ``REPORT_S``
is printed as ``loop-lag <monotonic> <late ms> <cpu ms>`` (CLOCK_MONOTONIC is one clock for
every process on Linux, so the test keeps the lines of its own time window). ``cpu`` is what
the loop's own thread computed meanwhile (a decode or a parse on the loop); lateness without
it is a blocking wait (a fetch on the loop), another thread holding the GIL, or a machine too
loaded to schedule the process. Test tooling only: the package carries no probe.
"""

from __future__ import annotations

import asyncio
import sys
import time

from inference.cli import main
from inference.http.server import DrainingServer

PERIOD_S = 0.002
REPORT_S = 0.005


async def probe() -> None:
    while True:
        expected, cpu = time.monotonic() + PERIOD_S, time.thread_time()
        await asyncio.sleep(PERIOD_S)
        woke, busy = time.monotonic(), time.thread_time() - cpu
        if woke - expected > REPORT_S:
            late_ms, busy_ms = (woke - expected) * 1000, busy * 1000
            print(f"loop-lag {woke:.6f} {late_ms:.1f} {busy_ms:.1f}", flush=True)


def with_probe(serve):  # type: ignore[no-untyped-def]
    async def serving(self, sockets=None):  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(probe())
        try:
            await serve(self, sockets)
        finally:
            task.cancel()

    return serving


if __name__ == "__main__":
    DrainingServer.serve = with_probe(DrainingServer.serve)  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
