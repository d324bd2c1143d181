"""The result cache: a request that gives its seed is a pure function of its job, so its result
can be served again without the model.

It sits in the service (``Service.submit``, which ``generate`` runs too), so every front door
benefits: HTTP, the OpenAI route, the UI, Cog, Modal, batch jobs and the CLI.

- **Key**: the model's identity (class, name, weights revision, safety checker) and the fully
  resolved ``Job`` (every field, the output format and each image's seed included). A job whose
  seed the server drew (``Job.seed_drawn``) is never cached: nobody can ask for it again.
- **Bounded** by the encoded image bytes it holds (``RESULT_CACHE_MB``), least recently used
  first out; a result larger than the whole cache is not stored.
- **Single flight**: the first caller of a key computes, identical requests that arrive meanwhile
  wait for its result instead of computing it again. If that caller gives up (its client left, or
  an unexpected error), a waiting caller computes instead; a domain error (an invalid request, a
  failed model call, a timeout) is shared with everyone who asked the same thing at that time.
- **Byte-identical**: a hit returns the very images the model call produced; only ``timings``
  (this caller's wait) and ``cache`` differ.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Literal

from inference.errors import InferenceError
from inference.results import GenerateResult, Timings

Flight = concurrent.futures.Future  # of GenerateResult, or None: "the computing caller gave up"


def model_identity(model: Any) -> tuple[str, str, str | None, str | None]:
    """What distinguishes one served model from another in the cache key."""
    cls = type(model)
    return (
        f"{cls.__module__}.{cls.__qualname__}",
        model.name,
        getattr(model, "revision", None),
        getattr(model, "safety_checker", None),
    )


def result_bytes(result: GenerateResult) -> int:
    return sum(len(image.data) for image in result.images)


class ResultCache:
    """A bytes-bounded LRU of results with single-flight computation; safe from any thread."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.bytes = 0
        self._entries: OrderedDict[Hashable, GenerateResult] = OrderedDict()
        self._flights: dict[Hashable, Flight] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    async def submit(
        self, key: Hashable, compute: Callable[[], Awaitable[GenerateResult]]
    ) -> GenerateResult:
        """The cached result for ``key``, another caller's, or ``await compute()``'s."""
        started = time.monotonic()
        while True:
            claim = self._claim(key)
            if isinstance(claim, GenerateResult):
                return _copy(claim, "hit", started)
            if claim is None:
                try:
                    result = await compute()
                except BaseException as exc:
                    self._land(key, None, exc)
                    raise
                self._land(key, result, None)
                return _copy(result, "miss")
            shared = await _wait(claim)
            if shared is not None:
                self._count_hit()
                return _copy(shared, "hit", started)

    def _claim(self, key: Hashable) -> GenerateResult | Flight | None:
        """A stored result (a hit), a flight to wait for, or None: the caller computes."""
        with self._lock:
            result = self._entries.get(key)
            if result is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return result
            flight = self._flights.get(key)
            if flight is not None:
                return flight
            self._flights[key] = Flight()
            self.misses += 1
            return None

    def _land(
        self, key: Hashable, result: GenerateResult | None, error: BaseException | None
    ) -> None:
        """End the flight of ``key``: store the result, and tell whoever waits for it."""
        with self._lock:
            flight = self._flights.pop(key)
            if result is not None:
                self._store(key, result)
        if isinstance(error, InferenceError):
            flight.set_exception(error)
        else:  # a result, or None: the computing caller gave up and a waiting one takes over
            flight.set_result(result)

    def _store(self, key: Hashable, result: GenerateResult) -> None:
        size = result_bytes(result)
        if size > self.max_bytes:
            return
        self._entries[key] = result
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= result_bytes(evicted)

    def _count_hit(self) -> None:
        with self._lock:
            self.hits += 1


async def _wait(flight: Flight) -> GenerateResult | None:
    """Await another caller's flight without letting this caller's cancellation cancel it."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[GenerateResult | None] = loop.create_future()

    def settle(done: Flight) -> None:
        if waiter.done():  # this caller was cancelled meanwhile
            return
        error = done.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    flight.add_done_callback(lambda done: loop.call_soon_threadsafe(settle, done))
    return await waiter


def _copy(
    result: GenerateResult, cache: Literal["hit", "miss"], started: float | None = None
) -> GenerateResult:
    """A caller's own copy (the stored one is never handed out); a hit took no model time."""
    update: dict[str, Any] = {"cache": cache, "images": [i.model_copy() for i in result.images]}
    if started is not None:
        waited_ms = (time.monotonic() - started) * 1000
        update["timings"] = Timings(
            queue_ms=0.0, inference_ms=0.0, encode_ms=0.0, total_ms=waited_ms
        )
    return result.model_copy(update=update)
