"""The engine: owns the loaded model (one replica per device), runs its calls batch by batch.

One worker thread per replica runs that replica's calls; every worker takes its batches from one
shared queue, so a batch goes to whichever device is free and a failing device fails only the
batches it ran. Engines of other versions may have replicas on the same device: a worker holds
its device's arbiter (``engine.arbiter``) for each model call, so an accelerator never runs two
calls at once and versions take turns on it. Callers from any context
share that queue: async callers (``await submit``) and sync ones
(``run``). Which requests share a call is the batcher's policy (``engine.batcher``); what one
call does with its callers (stop between steps, fail only its own batch) is ``engine.calls``.
Jobs arrive validated (``inference.validation``): the engine never sees a raw request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal

from inference import codec
from inference.engine.arbiter import DeviceArbiter
from inference.engine.batcher import Batcher, Closed, Preview, Progress, Ticket
from inference.engine.calls import BatchListener, EngineStats, ModelCalls, StepListener
from inference.engine.encoding import Output, encode_result, encode_when_done
from inference.engine.outputs import checked
from inference.errors import InferenceError, ModelError, NotReady
from inference.models.base import Model
from inference.models.devices import shared_device
from inference.results import GenerateResult
from inference.schema import Job
from inference.settings import Settings

log = logging.getLogger(__name__)

Phase = Literal["created", "loading", "ready", "draining", "failed", "stopped"]


class Engine:
    """Serves one model, on one device or several; see the module docstring."""

    def __init__(
        self,
        model: Model,
        settings: Settings | None = None,
        replicas: Sequence[Model] = (),
        device_names: Sequence[str] | None = None,
    ) -> None:
        """``model`` serves on the first device; ``replicas``, the same model built for each
        further device (``models.devices``), share its queue. ``device_names``: each replica's
        device as its settings name it; given, a replica takes turns with every engine's on
        that device (``shared_device``); omitted, each replica has a device to itself (an
        engine built by hand, as tests do)."""
        settings = settings or Settings()
        self.model = model
        self.replicas = [model, *replicas]
        self.stats = EngineStats()
        self.batcher = Batcher(
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            request_timeout_s=settings.request_timeout_s,
            on_drop=self._count_drop,
            policy=settings.batch_policy,
            declared_cost=declared_cost(model),
        )
        self.lossy = codec.LossyEncoding(
            jpeg_quality=settings.jpeg_quality,
            webp_quality=settings.webp_quality,
            webp_method=settings.webp_method,
        )
        self.phase: Phase = "created"
        self.load_error: str | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0  # requests queued or running, for drain()
        self._workers: list[threading.Thread] = []
        self._device_names = list(device_names) if device_names is not None else None
        self.arbiters = [DeviceArbiter(f"replica {i}") for i in range(len(self.replicas))]
        self.devices = [self._calls(replica) for replica in self.replicas]
        self.calls = self.devices[0]
        for calls in self.devices[1:]:  # one list of listeners, whichever device runs a batch
            calls.batch_listeners = self.calls.batch_listeners
            calls.step_listeners = self.calls.step_listeners

    def _calls(self, model: Model) -> ModelCalls:
        return ModelCalls(
            model,
            self.stats,
            stopped=lambda: self.phase == "stopped",
            not_ready=self.not_ready,
            timed_out=self.batcher.timeout_error,
        )

    def _count_drop(self) -> None:
        self.stats.dropped_requests += 1

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def queue_depth(self) -> int:
        return self.batcher.depth

    @property
    def previews(self) -> bool:
        """Whether the model offers step previews (``generate`` accepts ``preview=``)."""
        return self.calls.previews

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, warm_up: Callable[[], Job]) -> Engine:
        """Load the model, run ``warm_up()``'s job once, then serve. Blocks; idempotent.

        Loading, warm-up and every model call run on the one worker thread: torch's CPU thread
        pool belongs to the thread that used it first, and a second thread that runs torch work
        afterwards measured 2.4 x slower (tiny SD on 2 cores). ``warm_up`` is called after the
        load (a model's defaults may come from its weights); it may raise to refuse the
        configuration. A ``stop()`` that arrives while the model loads wins: the engine stays
        stopped. A load failure is raised here.
        """
        with self._lock:
            if self.phase in ("loading", "ready"):
                return self
            self.phase = "loading"
        loads = [concurrent.futures.Future[None]() for _ in self.devices]
        go = threading.Event()  # set once every replica loaded, or one failed
        for index, loaded in enumerate(loads):
            name = "engine-worker" if index == 0 else f"engine-worker-{index}"
            worker = threading.Thread(
                target=self._load_and_serve,
                args=(index, warm_up, loaded, go),
                name=name,
                daemon=True,
            )
            self._workers.append(worker)
            worker.start()
        try:
            for loaded in loads:
                loaded.result()
        finally:
            with self._lock:
                if self.phase == "loading":  # not stopped while loading, and none failed
                    self.phase = "ready"
            go.set()
        return self

    def _load_and_serve(
        self,
        index: int,
        warm_up: Callable[[], Job],
        loaded: concurrent.futures.Future[None],
        go: threading.Event,
    ) -> None:
        calls = self.devices[index]
        try:
            self._load(index, warm_up)
        except BaseException as exc:
            loaded.set_exception(exc)
            return
        loaded.set_result(None)
        go.wait()
        if self.phase == "ready":
            self._serve(calls, self.arbiters[index])

    def _load(self, index: int, warm_up: Callable[[], Job]) -> None:
        model = self.replicas[index]
        try:
            started = time.perf_counter()
            model.load()
            self.stats.load_s = time.perf_counter() - started
            if self._device_names is not None:
                # Known once loaded: DEVICE=auto resolves in the backend's load().
                device = shared_device(model, self._device_names[index])
                # A name listed twice (DEVICES=cpu,cpu: simulated devices) is asked for as two
                # devices: the second replica takes the name's second arbiter, not the first's.
                repeat = self._device_names[:index].count(self._device_names[index])
                self.arbiters[index] = DeviceArbiter.of(f"{device}#{repeat}" if repeat else device)
            # One small generation at the size actually served, so the first request is not
            # the one that pays for lazy initialisation (kernels, allocator, caches); a model
            # computing elsewhere (``models.remote``) says it has nothing here to warm.
            if getattr(model, "needs_warm_up", True):
                job = warm_up()
                started = time.perf_counter()
                with self.arbiters[index]:
                    checked([job], model.generate([job]))
                self.stats.warmup_s = time.perf_counter() - started
        except BaseException as exc:
            with self._lock:
                if self.phase == "loading":
                    self.phase = "failed"
            self.load_error = str(exc) or type(exc).__name__
            if isinstance(exc, InferenceError):  # expected, and its message says it all
                log.error("model %r failed to load: %s", model.name, exc)
            else:
                log.exception("model %r failed to load", model.name)
            raise
        warm = self.stats.warmup_s
        log.info(
            "model %r ready (load %.2fs, %s)",
            model.name,
            self.stats.load_s,
            "no warm-up" if warm is None else f"warm-up {warm:.2f}s",
        )

    def drain(self, grace_s: float) -> bool:
        """Refuse new requests at once (NotReady, so HTTP answers 503 with Retry-After and
        /ready turns 503), and give the queued and running ones up to ``grace_s`` to finish.
        Returns whether they all did; ``stop()`` then fails what is left."""
        deadline = time.monotonic() + grace_s
        with self._idle:
            if self.phase == "ready":
                self.phase = "draining"
            while self._in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._idle.wait(remaining)
            return not self._in_flight

    def stop(self) -> None:
        """Stop serving: queued requests fail with NotReady, a running batch stops at its next
        step and fails the same way. Idempotent."""
        with self._lock:
            serving = self.phase in ("ready", "draining")  # a loading worker finishes alone
            self.phase = "stopped"
        for ticket in self.batcher.close():
            if ticket.future.set_running_or_notify_cancel():
                ticket.future.set_exception(self.not_ready())
        if serving:
            for worker in self._workers:
                if worker is not threading.current_thread():
                    worker.join(timeout=30)

    def add_batch_listener(self, listener: BatchListener) -> None:
        """Called after each model call with (images in the batch, seconds it took)."""
        self.calls.batch_listeners.append(listener)

    def add_step_listener(self, listener: StepListener) -> None:
        """Called after each denoising step with (step, total steps) of the running batch."""
        self.calls.step_listeners.append(listener)

    # -- submitting --------------------------------------------------------------------------

    def _enqueue(self, job: Job, progress: Progress | None, preview: Preview | None) -> Ticket:
        if self.phase != "ready":
            raise self.not_ready()
        try:
            ticket = self.batcher.put(job, self.model.batch_key(job), progress, preview)
        except Closed:
            raise self.not_ready() from None
        with self._lock:
            self._in_flight += 1
        ticket.future.add_done_callback(self._finished)
        return ticket

    def _finished(self, _: concurrent.futures.Future[Output]) -> None:
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()

    def not_ready(self) -> NotReady:
        """Why a request is refused now: the one wording of "loading", "failed to load" and
        "shutting down", which every front door renders in its own shape."""
        if self.phase == "failed":
            return NotReady(f"the model failed to load: {self.load_error}", permanent=True)
        if self.phase in ("draining", "stopped"):
            return NotReady("the server is shutting down; retry on another replica or later")
        return NotReady("the model is still loading; retry when GET /ready answers 200")

    def queue(
        self, job: Job, progress: Progress | None = None, preview: Preview | None = None
    ) -> Pending:
        """Queue ``job``: the one way in, for callers of both worlds (``run``, ``submit``).

        ``progress(step, total)`` is called on the worker thread after each step of the batch
        that holds this job; it must be quick, and an exception in it is logged, never raised.
        ``preview(step, total, render)`` likewise, where the model offers previews
        (``self.previews``): ``render()`` returns this job's current images.
        """
        started = time.monotonic()
        ticket = self._enqueue(job, progress, preview)
        return Pending(
            ticket,
            self.batcher,
            lambda output: encode_result(job, output, self.model.name, started, self.lossy),
        )

    def run(
        self, job: Job, progress: Progress | None = None, preview: Preview | None = None
    ) -> GenerateResult:
        """Blocking ``queue(...).result()``; safe from any thread."""
        return self.queue(job, progress, preview).result()

    async def submit(
        self, job: Job, progress: Progress | None = None, preview: Preview | None = None
    ) -> GenerateResult:
        """``await queue(...).wait()``: cancelling the awaiting task abandons the request."""
        return await self.queue(job, progress, preview).wait()

    # -- the worker --------------------------------------------------------------------------

    def _serve(self, calls: ModelCalls, arbiter: DeviceArbiter) -> None:
        free_since = time.monotonic()
        while (batch := self.batcher.take(free_since)) is not None:
            seconds, started = None, time.monotonic()
            try:
                with arbiter:  # the batch is formed first: the device is never held idle
                    started = time.monotonic()  # the batch's own time, not its turn's wait
                    seconds = calls.run(batch)
            except Exception:  # a bug outside the model call must not end the worker
                log.exception("the engine failed a batch of %d requests", len(batch))
                error = ModelError("the server failed on this request; its log has the details")
                for ticket in batch:
                    if not ticket.future.done():
                        ticket.future.set_exception(error)
            finally:
                self.batcher.done(batch, seconds, started)
                free_since = time.monotonic()


def declared_cost(model: Model) -> Callable[[int], float] | None:
    """The model's own ``cost(batch_size) -> seconds`` (or ``cost_model``), if it has one."""
    cost = getattr(model, "cost", None) or getattr(model, "cost_model", None)
    return cost if callable(cost) else None


class Pending:
    """A queued job, awaited (``wait``) or blocked on (``result``) over one ticket's future.

    Both give up at the request's deadline (REQUEST_TIMEOUT_S) and abandon the request when
    their caller does: it leaves the queue at once, or its batch stops between two steps once
    every request in it is abandoned; the others in its batch are not disturbed. Encoding runs
    in the encoding pool for an awaiting caller, starting as soon as the batch has run, on
    the caller's thread for a blocking one.
    """

    def __init__(
        self, ticket: Ticket, batcher: Batcher, encode: Callable[[Output], GenerateResult]
    ) -> None:
        self.ticket = ticket
        self.batcher = batcher
        self.encode = encode

    def _left_s(self) -> float:
        return max(0.0, self.ticket.deadline - time.monotonic())

    def result(self) -> GenerateResult:
        return self.encode(self.output())

    def output(self) -> Output:
        """The job's pixels, not encoded (blocking): for a pool that answers a router, which
        encodes them itself (``models.remote``)."""
        try:
            return self.ticket.future.result(timeout=self._left_s())
        except concurrent.futures.TimeoutError:
            raise self._timed_out() from None
        except BaseException:
            self.batcher.abandon(self.ticket)
            raise

    async def wait(self) -> GenerateResult:
        encoded = asyncio.wrap_future(encode_when_done(self.ticket.future, self.encode))
        try:
            return await asyncio.wait_for(encoded, timeout=self._left_s())
        except TimeoutError:
            raise self._timed_out() from None
        except BaseException:
            self.batcher.abandon(self.ticket)
            raise

    def _timed_out(self) -> Exception:
        self.batcher.abandon(self.ticket)
        return self.batcher.timeout_error()
