"""Where predictions live: the interface the routes use, and the in-process implementation.

``PredictionStore`` is all the Replicate and Cog routes know, so the same routes serve from this
process's memory (``LocalStore``: the Space, ``python -m inference serve``) or from Modal's
shared primitives (``inference.predictions.modal_store.ModalStore``), where a GET may reach another
container than the POST that created the prediction.

``LocalStore`` runs each prediction as an asyncio task awaiting ``service.submit``; cancelling
the task is the cancel (the engine drops a queued request, or stops its batch between steps once
every request in it has gone). It holds at most ``PREDICTIONS_MAX_COUNT`` predictions and
``PREDICTIONS_MAX_BYTES`` bytes (a running one reserves its images' raw size), forgets finished
ones ``PREDICTIONS_TTL_S`` after they ended (never while a request waits on one: a wait that
found its prediction gone would have nothing to return), and answers 503 (``Overloaded``) when
full. At most half the engine's queue is filled with predictions, so /predict callers keep
room; the rest wait here, ``starting``, without using up their REQUEST_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from inference.errors import InferenceError, InvalidRequest, Overloaded
from inference.predictions.record import Event, Prediction, reserve_bytes
from inference.predictions.webhooks import WebhookSender
from inference.schema import Job
from inference.service import Service, Submit
from inference.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_ERROR = "the server shut down before this prediction finished; create it again"


class PredictionStore(Protocol):
    """What the predictions routes need; see the module docstring."""

    async def create(
        self, prediction: Prediction, job: Job, run: Submit | None = None
    ) -> Prediction:
        """Store and start ``prediction``; the existing one if its id is taken (idempotent).
        ``run`` runs the job where a registry routed it (default: the store's service).
        Raises ``Overloaded`` when full."""
        ...

    async def get(self, prediction_id: str) -> Prediction | None: ...

    async def cancel(self, prediction_id: str) -> Prediction | None:
        """Cancel it if it is still running; either way return it (None if unknown)."""
        ...

    async def list(self, before: tuple[float, str] | None, limit: int) -> list[Prediction]:
        """Newest first, strictly older than ``before`` (created_at, id) when given."""
        ...

    async def wait(
        self, prediction_id: str, timeout_s: float, after_revision: int | None = None
    ) -> Prediction | None:
        """The prediction once it is done, or has a revision above ``after_revision``, or
        ``timeout_s`` has passed, whichever comes first."""
        ...

    async def close(self) -> None:
        """Shutting down: running predictions fail with a clear error, webhooks go out."""
        ...


def retry_after_s(predictions: list[Prediction], ttl_s: float, now: float) -> int:
    """When the store should have room again: the oldest finished prediction's expiry."""
    ends = [p.completed_at for p in predictions if p.done and p.completed_at is not None]
    return max(1, math.ceil(min(ends) + ttl_s - now)) if ends else 5


def check_room(predictions: list[Prediction], job: Job, settings: Settings, now: float) -> int:
    """The bytes ``job`` reserves; ``Overloaded`` if the store has no room for it."""
    reserve = reserve_bytes(job)
    if reserve > settings.predictions_max_bytes:
        raise InvalidRequest(
            "num_outputs",
            f"this prediction's images need up to {reserve} bytes, more than this server keeps "
            f"({settings.predictions_max_bytes}, PREDICTIONS_MAX_BYTES); ask for fewer or "
            "smaller images",
        )
    used = sum(p.size_bytes for p in predictions)
    if len(predictions) >= settings.predictions_max_count:
        problem = f"{len(predictions)} predictions (PREDICTIONS_MAX_COUNT)"
    elif used + reserve > settings.predictions_max_bytes:
        problem = f"{used} bytes of predictions (PREDICTIONS_MAX_BYTES)"
    else:
        return reserve
    retry = retry_after_s(predictions, settings.predictions_ttl_s, now)
    raise Overloaded(f"the prediction store is full: {problem}; retry in {retry}s", retry)


@dataclass(eq=False)
class _Entry:
    prediction: Prediction
    job: Job
    #: Where the job runs: a routed version's ``Submit``, else the store's service.
    run: Submit | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    shutting_down: bool = False
    #: Requests waiting on it now: a pinned prediction is not evicted under them.
    waiters: int = 0


class LocalStore:
    """Predictions in this process; see the module docstring."""

    def __init__(
        self, service: Service, settings: Settings, webhooks: WebhookSender | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.webhooks = webhooks or WebhookSender(settings)
        self._entries: dict[str, _Entry] = {}
        self._admission = asyncio.Semaphore(max(1, settings.max_queue_size // 2))

    async def create(
        self, prediction: Prediction, job: Job, run: Submit | None = None
    ) -> Prediction:
        self._evict(time.time())
        if (existing := self._entries.get(prediction.id)) is not None:
            return existing.prediction.copy()
        predictions = [e.prediction for e in self._entries.values()]
        prediction.reserved_bytes = check_room(predictions, job, self.settings, time.time())
        entry = self._entries[prediction.id] = _Entry(prediction, job, run)
        entry.task = asyncio.create_task(self._run(entry), name=f"prediction-{prediction.id}")
        return prediction.copy()

    async def get(self, prediction_id: str) -> Prediction | None:
        self._evict(time.time())
        entry = self._entries.get(prediction_id)
        return entry.prediction.copy() if entry else None

    async def cancel(self, prediction_id: str) -> Prediction | None:
        entry = self._entries.get(prediction_id)
        if entry is None:
            return None
        if entry.task is not None and not entry.prediction.done:
            entry.task.cancel()
            await asyncio.wait({entry.task})
        return entry.prediction.copy()

    async def list(self, before: tuple[float, str] | None, limit: int) -> list[Prediction]:
        self._evict(time.time())
        newest_first = sorted(
            (e.prediction for e in self._entries.values()),
            key=lambda p: (p.created_at, p.id),
            reverse=True,
        )
        if before is not None:
            newest_first = [p for p in newest_first if (p.created_at, p.id) < before]
        return [p.copy() for p in newest_first[:limit]]

    async def wait(
        self, prediction_id: str, timeout_s: float, after_revision: int | None = None
    ) -> Prediction | None:
        deadline = time.monotonic() + timeout_s
        if (entry := self._entries.get(prediction_id)) is None:
            return None
        entry.waiters += 1  # the entry cannot be evicted before this wait has read it
        try:
            while not (p := entry.prediction).done and (
                after_revision is None or p.revision <= after_revision
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(entry.changed.wait(), remaining)
                except TimeoutError:
                    break
            return entry.prediction.copy()
        finally:
            entry.waiters -= 1

    def usage(self) -> tuple[int, int]:
        """(predictions, bytes) held now, as the admission check counts them: what /metrics
        shows, so an operator can tell a full store from a leak. Expired predictions still
        count until the next request drops them: they still hold their memory."""
        predictions = [e.prediction for e in self._entries.values()]
        return len(predictions), sum(p.size_bytes for p in predictions)

    async def close(self) -> None:
        running = [e for e in self._entries.values() if e.task and not e.task.done()]
        for entry in running:
            entry.shutting_down = True
            entry.task.cancel()  # type: ignore[union-attr]
        if running:
            log.warning("shutdown: %d unfinished predictions fail", len(running))
            await asyncio.wait({e.task for e in running if e.task})
        s = self.settings
        grace_s = min(30.0, s.webhook_timeout_s * s.webhook_max_attempts)
        await asyncio.to_thread(self.webhooks.close, grace_s)

    # -- running one -------------------------------------------------------------------------

    async def _run(self, entry: _Entry) -> None:
        loop = asyncio.get_running_loop()

        def progress(step: int, total: int) -> None:  # on the engine's worker thread
            now = time.time()
            loop.call_soon_threadsafe(self._apply, entry, lambda p: p.step(step, total, now))

        try:
            async with self._admission:
                while True:
                    try:
                        run = entry.run or self.service.submit
                        result = await run(entry.job, progress)
                        break
                    except Overloaded as exc:  # /predict traffic filled the queue: wait here
                        await asyncio.sleep(min(exc.retry_after_s, 5))
        except asyncio.CancelledError:
            message = SHUTDOWN_ERROR if entry.shutting_down else None
            self._apply(entry, lambda p: p.fail(message) if message else p.cancel())
        except InferenceError as exc:
            error = exc.message
            self._apply(entry, lambda p: p.fail(error))
        except Exception:
            log.exception("prediction %s failed", entry.prediction.id)
            self._apply(entry, lambda p: p.fail("internal error; the server log has the details"))
        else:
            self._apply(entry, lambda p: p.succeed(result))

    def _apply(self, entry: _Entry, change: Callable[[Prediction], list[Event]]) -> None:
        """Run one transition on the event loop; wake readers; send the webhook it causes."""
        events = change(entry.prediction)
        entry.prediction.revision += 1
        entry.changed.set()
        entry.changed = asyncio.Event()
        if events:
            self.webhooks.send(entry.prediction.copy(), events)

    def _evict(self, now: float) -> None:
        ttl = self.settings.predictions_ttl_s
        expired = [
            pid
            for pid, e in self._entries.items()
            if e.prediction.done
            and not e.waiters
            and (e.prediction.completed_at or now) + ttl <= now
        ]
        for pid in expired:
            del self._entries[pid]
