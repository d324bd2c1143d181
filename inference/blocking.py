"""Blocking callers of the service's coroutines: one event loop on a thread of its own.

A request has one implementation, ``Service.submit``, a coroutine (validation off the loop,
the result cache's single flight, the engine's queue). Async front doors await it; callers in
the thread world (the CLI, batch jobs, Modal's sync methods) call ``Service.generate``, which
runs the same coroutine on this loop and blocks for its result, so the two worlds cannot drift
apart. The loop starts on first use and lives as long as the process (a daemon thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine``'s result, blocking this thread; safe from any thread without a loop.

    A caller that gives up (KeyboardInterrupt) cancels the coroutine, which abandons its
    request exactly as a disconnected HTTP client does.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coroutine.close()
        raise RuntimeError(
            "a blocking call from async code would stall its event loop; await the async "
            "version instead (Service.submit for Service.generate)"
        )
    future = asyncio.run_coroutine_threadsafe(coroutine, _running_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="blocking-calls", daemon=True).start()
            _loop = loop
        return _loop
