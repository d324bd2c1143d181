"""Predictions across Modal containers, with no import of ``modal``: deploy.py injects the calls.

On Modal a GET may reach another container than the POST that created the prediction, so
nothing may live in one container's memory:

- the job runs as a spawned call (``ModalCalls.spawn``, i.e. ``Model().run_prediction.spawn``);
  its result and its failure come from Modal's ``FunctionCall`` (``ModalCalls.result``), its
  cancel is ``FunctionCall.cancel`` (``ModalCalls.cancel``);
- the prediction record (status, logs, progress) lives in a ``modal.Dict`` (``records``): the
  API side writes it at creation, the job side (``ModalRunner``, in whichever container runs the
  call) as it progresses, at most every ``FLUSH_INTERVAL_S``;
- a second Dict (``meta``) maps each prediction to its call id and holds the one-time claim of
  its end (``put(..., skip_if_exists=True)``, Modal's only atomic write): whoever claims first, the
  job finishing or a cancel, decides the final status and sends the ``completed`` webhook.

Images never go into the Dicts: a GET takes them from the call's result. What goes in is plain,
versioned data (``Prediction.to_dict``, ``{"v": 1, ...}``), never a pickled class: Modal unpickles
a Dict's values with the reading container's code, so a redeploy that changed ``Prediction``
would break the records of predictions in flight. A pickled ``Prediction`` left by a deployment
from before this schema still loads. (Modal drops a Dict entry untouched for 7 days whatever
it holds; ``PREDICTIONS_TTL_S`` evicts finished records long before that by default.)

The store's bound is the number of records (``PREDICTIONS_MAX_COUNT``; the images are held by
Modal, not by a container), and finished records are evicted after ``PREDICTIONS_TTL_S`` when
the store lists or fills up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from inference.errors import InferenceError, InvalidRequest, Overloaded
from inference.predictions.record import Event, Prediction
from inference.predictions.store import check_room, retry_after_s
from inference.predictions.webhooks import WebhookSender
from inference.results import GenerateResult
from inference.schema import Job
from inference.service import Service, Submit
from inference.settings import Settings

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
Save = Callable[[Prediction], Awaitable[None]]
POLL_INTERVAL_S = 0.5


class ModalCalls(Protocol):
    """Modal's function-call primitives, as deploy.py binds them."""

    async def spawn(self, prediction: Prediction, job: Job) -> str:
        """Start the job in some container; returns the ``FunctionCall`` id."""
        ...

    async def result(self, call_id: str) -> GenerateResult | None:
        """``FunctionCall.get(timeout=0)``: the result, None while running; raises the job's
        error (or Modal's, e.g. a timeout)."""
        ...

    async def cancel(self, call_id: str) -> None: ...


class SharedDict(Protocol):
    """The few ``modal.Dict`` methods used (their ``.aio`` forms)."""

    async def get(self, key: str) -> Any: ...
    async def put(self, key: str, value: Any, skip_if_exists: bool = False) -> bool: ...
    async def pop(self, key: str) -> Any: ...
    async def len(self) -> int: ...
    async def values(self) -> list[Any]: ...


def _claim_key(prediction_id: str) -> str:
    return f"done/{prediction_id}"


def _call_key(prediction_id: str) -> str:
    return f"call/{prediction_id}"


def _record(stored: dict[str, Any] | Prediction) -> Prediction:
    """A stored record as a ``Prediction``: plain data, or a pickled one from before it."""
    return stored if isinstance(stored, Prediction) else Prediction.from_dict(stored)


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, InferenceError):
        return exc.message
    return f"the job failed on Modal: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")


class _Shared:
    """Records and claims, shared by the API side and the job side."""

    def __init__(self, records: SharedDict, meta: SharedDict, webhooks: WebhookSender) -> None:
        self.records, self.meta, self.webhooks = records, meta, webhooks

    async def claim_end(
        self, prediction: Prediction, change: Callable[[Prediction], list[Event]], save: Save
    ) -> bool:
        """Apply the final ``change`` if nobody ended this prediction before; persist, notify."""
        events = change(prediction)
        end = {
            "v": Prediction.RECORD_VERSION,
            "status": prediction.status,
            "completed_at": prediction.completed_at,
            "error": prediction.error,
        }
        if not await self.meta.put(_claim_key(prediction.id), end, skip_if_exists=True):
            return False
        await save(prediction)
        self.webhooks.send(prediction.copy(), events)
        return True

    async def save(self, prediction: Prediction) -> None:
        """Write the record (without its images, which stay in the call's result)."""
        prediction.revision += 1
        await self.records.put(prediction.id, prediction.to_dict())

    async def load(self, prediction_id: str) -> Prediction | None:
        stored = await self.records.get(prediction_id)
        if stored is None:
            return None
        prediction = _record(stored)
        end = await self.meta.get(_claim_key(prediction_id))
        if end is not None and not prediction.done:  # a progress write landed after the end
            if isinstance(end, dict):
                end = (end["status"], end["completed_at"], end["error"])
            prediction.status, prediction.completed_at, prediction.error = end
        return prediction

    async def records_now(self) -> list[Prediction]:
        """Every record in the store, as ``Prediction`` objects."""
        return [_record(stored) for stored in await self.records.values()]


class ModalStore(_Shared):
    """The ``PredictionStore`` of a Modal deployment; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        calls: ModalCalls,
        records: SharedDict,
        meta: SharedDict,
        webhooks: WebhookSender | None = None,
    ) -> None:
        super().__init__(records, meta, webhooks or WebhookSender(settings))
        self.settings = settings
        self.calls = calls

    async def create(
        self, prediction: Prediction, job: Job, run: Submit | None = None
    ) -> Prediction:
        if run is not None:
            # A spawned prediction runs on a GPU container's one service; routing a registry's
            # versions to their own pools on Modal is not built yet (issue 23, phase 3).
            raise InvalidRequest(
                "version",
                "this deployment's predictions (Modal) serve the default model only; "
                "use /predict or /v1/images/generations to choose another",
            )
        if (existing := await self.get(prediction.id)) is not None:
            return existing
        if await self.records.len() >= self.settings.predictions_max_count:
            await self._evict(time.time())
            if (count := await self.records.len()) >= self.settings.predictions_max_count:
                retry = retry_after_s(
                    await self.records_now(), self.settings.predictions_ttl_s, time.time()
                )
                raise Overloaded(
                    f"the prediction store is full: {count} predictions "
                    f"(PREDICTIONS_MAX_COUNT); retry in {retry}s",
                    retry,
                )
        check_room([], job, self.settings, time.time())  # a single prediction over the bound
        await self.save(prediction)
        try:
            call_id = await self.calls.spawn(prediction, job)
        except Exception as exc:  # Modal refused the call: the record must not wait forever
            log.exception("prediction %s: spawning its job failed", prediction.id)
            message = f"could not start the job on Modal: {type(exc).__name__}"
            await self.claim_end(prediction, lambda p: p.fail(message), self.save)
            raise
        await self.meta.put(_call_key(prediction.id), call_id)
        return prediction

    async def get(self, prediction_id: str) -> Prediction | None:
        prediction = await self.load(prediction_id)
        call_id = await self.meta.get(_call_key(prediction_id))
        if prediction is None or call_id is None or prediction.status in ("failed", "canceled"):
            return prediction
        try:
            result = await self.calls.result(call_id)
        except Exception as exc:  # the job raised, or Modal gave up on it (timeout, crash)
            message = _error_message(exc)
            if await self.claim_end(prediction, lambda p: p.fail(message), self.save):
                log.warning("prediction %s failed on Modal: %s", prediction_id, message)
            return await self.load(prediction_id)
        if result is not None:
            prediction.succeed(result)  # the images; the status too if the job's write lags
        return prediction

    async def cancel(self, prediction_id: str) -> Prediction | None:
        prediction = await self.get(prediction_id)
        if prediction is None or prediction.done:
            return prediction
        if (call_id := await self.meta.get(_call_key(prediction_id))) is not None:
            await self.calls.cancel(call_id)
        await self.claim_end(prediction, lambda p: p.cancel(), self.save)
        return await self.get(prediction_id)

    async def list(self, before: tuple[float, str] | None, limit: int) -> list[Prediction]:
        predictions = await self._evict(time.time())
        newest_first = sorted(predictions, key=lambda p: (p.created_at, p.id), reverse=True)
        if before is not None:
            newest_first = [p for p in newest_first if (p.created_at, p.id) < before]
        return newest_first[:limit]

    async def wait(
        self, prediction_id: str, timeout_s: float, after_revision: int | None = None
    ) -> Prediction | None:
        deadline = time.monotonic() + timeout_s
        while True:
            prediction = await self.get(prediction_id)
            if prediction is None or prediction.done or time.monotonic() >= deadline:
                return prediction
            if after_revision is not None and prediction.revision > after_revision:
                return prediction
            await asyncio.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    async def close(self) -> None:
        await asyncio.to_thread(self.webhooks.close, self.settings.webhook_timeout_s)

    async def _evict(self, now: float) -> list[Prediction]:
        """The records still kept, after dropping those finished more than the TTL ago."""
        kept = []
        for prediction in await self.records_now():
            ended = prediction.completed_at or now
            if prediction.done and ended + self.settings.predictions_ttl_s <= now:
                for dictionary, key in (
                    (self.records, prediction.id),
                    (self.meta, _call_key(prediction.id)),
                    (self.meta, _claim_key(prediction.id)),
                ):
                    await dictionary.pop(key)
            else:
                kept.append(prediction)
        return kept


class ModalRunner(_Shared):
    """The job side: runs a spawned prediction on this container's service and reports."""

    def __init__(
        self, service: Service, records: SharedDict, meta: SharedDict, webhooks: WebhookSender
    ) -> None:
        super().__init__(records, meta, webhooks)
        self.service = service

    async def run(self, prediction: Prediction, job: Job) -> dict[str, Any]:
        """The job's result as ``Model.generate`` returns it; raises what the service raised.

        The first step is written at once (``processing``, the ``start`` webhook); later steps
        at most every ``FLUSH_INTERVAL_S``. Writes go out in order, one at a time.
        """
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()
        writes: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)
        pending: list[tuple[int, int, float]] = []

        async def save(snapshot: Prediction) -> None:
            async with lock:  # FIFO: records land in the order they were made
                await self.save(snapshot)

        def write(events: list[Event]) -> None:
            task = loop.create_task(save(prediction))
            writes.add(task)
            task.add_done_callback(writes.discard)
            self.webhooks.send(prediction.copy(), events)

        async def flush() -> None:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            if events := take_pending():
                write(events)

        def take_pending() -> list[Event]:
            events = [e for step, total, now in pending for e in prediction.step(step, total, now)]
            pending.clear()
            return events

        def on_step(step: int, total: int, now: float) -> None:
            if prediction.status == "starting":
                write(prediction.step(step, total, now))
                return
            if not pending:
                flushes.append(loop.create_task(flush()))
            pending.append((step, total, now))

        def progress(step: int, total: int) -> None:  # on the engine's worker thread
            loop.call_soon_threadsafe(on_step, step, total, time.time())

        flushes: list[asyncio.Task[None]] = []
        try:
            result = await self.service.submit(job, progress)
        except Exception as exc:
            message = _error_message(exc)
            await self.claim_end(prediction, lambda p: p.fail(message), save)
            raise
        finally:  # the steps not written yet go with the end (a cancel's end is the canceller's)
            for flushing in flushes:
                flushing.cancel()
            take_pending()
        await self.claim_end(prediction, lambda p: p.succeed(result), save)
        return result.model_dump()
