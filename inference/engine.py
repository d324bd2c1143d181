"""The engine: owns one loaded model and serves it with dynamic batching.

One worker thread runs every model call, so a single accelerator is never shared by two calls,
and callers from any context share one queue: async routes (``await submit``), sync Cog and
Modal methods and the CLI (``generate``). The worker takes the oldest request, gathers queued
requests that the model can serve in the same call (equal ``batch_key``) until the batch holds
``max_batch_size`` images or ``max_wait_ms`` has passed since the oldest arrived, and runs them
as one call. It waits for company only while traffic is concurrent (the last batch held several
requests, or requests arrived while it ran), so a lone caller never pays ``max_wait_ms``.
The queue is bounded (a full queue refuses at once), every request has a deadline, a request
abandoned before its batch starts is dropped, a batch whose callers have all gone stops between
steps, and a failing call fails only its own batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inference import images as image_codec
from inference.errors import (
    InferenceError,
    InvalidRequest,
    ModelError,
    ModelLoadError,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from inference.models import Model, build_model
from inference.schema import (
    Defaults,
    GeneratedImage,
    GenerateRequest,
    GenerateResult,
    Job,
    Limits,
    Timings,
    resolve,
)
from inference.settings import Settings

log = logging.getLogger(__name__)

Phase = Literal["created", "loading", "ready", "failed", "stopped"]
BatchListener = Callable[[int, float], None]
StepListener = Callable[[int, int], None]


class _BatchAbandoned(Exception):
    """Raised from the progress callback when every caller of the running batch has gone."""


@dataclass
class _Output:
    pixels: list[np.ndarray]
    batch_images: int
    queue_s: float
    inference_s: float


@dataclass(eq=False)
class _Ticket:
    job: Job
    key: Hashable
    enqueued: float
    deadline: float
    future: concurrent.futures.Future[_Output] = field(default_factory=concurrent.futures.Future)
    abandoned: bool = False

    def abandon(self) -> bool:
        """Mark the caller gone; True if the request had not started (so it can be dropped)."""
        self.abandoned = True
        return self.future.cancel()


@dataclass
class EngineStats:
    """Plain counters for tests, the CLI and GET /; Prometheus metrics read the listeners."""

    model_calls: int = 0
    images_generated: int = 0
    failed_batches: int = 0
    abandoned_batches: int = 0
    dropped_requests: int = 0
    load_s: float | None = None
    warmup_s: float | None = None


class Engine:
    """Serves one model; see the module docstring for the batching policy."""

    def __init__(self, model: Model, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.model = model
        self.max_batch_size = settings.max_batch_size
        self.max_wait_s = settings.max_wait_ms / 1000.0
        self.max_queue_size = settings.max_queue_size
        self.request_timeout_s = settings.request_timeout_s
        self.limits: Limits = settings.limits
        self._settings = settings
        self.phase: Phase = "created"
        self.load_error: str | None = None
        self.stats = EngineStats()
        self._pending: deque[_Ticket] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._batch_listeners: list[BatchListener] = []
        self._step_listeners: list[StepListener] = []
        self._mean_batch_s = 0.0
        # Whether the last batch saw concurrent demand; a lone caller does not wait for company.
        self._company_likely = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        return cls(build_model(settings), settings)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def defaults(self) -> Defaults:
        return self._settings.override_defaults(self.model.defaults)

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def start(self) -> Engine:
        """Load the model, run one warm-up generation, then start serving. Blocks; idempotent.

        Loading, warm-up and every model call run on the one worker thread: torch's CPU thread
        pool belongs to the thread that used it first, and a second thread that runs torch work
        afterwards measured 2.4 x slower (tiny SD on 2 cores). A ``stop()`` that arrives while
        the model loads wins: the engine stays stopped. A load failure is raised here.
        """
        with self._cond:
            if self.phase in ("loading", "ready"):
                return self
            self.phase = "loading"
        loaded = concurrent.futures.Future[None]()
        self._worker = threading.Thread(
            target=self._load_and_serve, args=(loaded,), name="engine-worker", daemon=True
        )
        self._worker.start()
        loaded.result()
        return self

    def _load_and_serve(self, loaded: concurrent.futures.Future[None]) -> None:
        try:
            self._load()
        except BaseException as exc:
            loaded.set_exception(exc)
            return
        with self._cond:
            serving = self.phase == "loading"  # not stopped while loading
            if serving:
                self.phase = "ready"
        loaded.set_result(None)
        if serving:
            self._run()

    def _load(self) -> None:
        try:
            started = time.perf_counter()
            self.model.load()
            self.stats.load_s = time.perf_counter() - started
            self._check_defaults()
            started = time.perf_counter()
            self._warm_up()
            self.stats.warmup_s = time.perf_counter() - started
        except BaseException as exc:
            with self._cond:
                if self.phase == "loading":
                    self.phase = "failed"
            self.load_error = str(exc) or type(exc).__name__
            if isinstance(exc, InferenceError):  # expected, and its message says it all
                log.error("model %r failed to load: %s", self.model.name, exc)
            else:
                log.exception("model %r failed to load", self.model.name)
            raise
        log.info(
            "model %r ready (load %.2fs, warm-up %.2fs)",
            self.model.name,
            self.stats.load_s,
            self.stats.warmup_s,
        )

    def stop(self) -> None:
        """Stop serving; queued requests fail with NotReady. Idempotent."""
        with self._cond:
            serving = self.phase == "ready"  # a worker still loading is left to finish alone
            self.phase = "stopped"
            pending, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        for ticket in pending:
            if ticket.future.set_running_or_notify_cancel():
                ticket.future.set_exception(NotReady("the server is shutting down"))
        worker = self._worker
        if serving and worker is not None and worker is not threading.current_thread():
            worker.join(timeout=30)

    def _check_defaults(self) -> None:
        """Limits tighter than the defaults would refuse every request that omits a field and
        blame its sender; refuse the configuration at start instead."""
        try:
            resolve(GenerateRequest(), self.defaults, self.limits)
        except InvalidRequest as exc:
            raise ModelLoadError(
                f"the default request does not fit this server's limits: {exc}; raise that "
                f"limit or set DEFAULT_{exc.field.upper()} (the model {self.model.name!r} "
                f"defaults to {self.defaults})"
            ) from None

    def _warm_up(self) -> None:
        """One small generation at the size actually served, so the first request is not the
        one that pays for lazy initialisation (kernels, allocator, caches)."""
        d = self.defaults
        job = Job("warm-up", "", (0,), d.prompt_weight, min(2, d.steps), d.width, d.height, "png")
        self._check_output([job], self.model.generate([job]))

    def add_batch_listener(self, listener: BatchListener) -> None:
        """Called after each model call with (images in the batch, seconds it took)."""
        self._batch_listeners.append(listener)

    def add_step_listener(self, listener: StepListener) -> None:
        """Called after each denoising step with (step, total steps) of the running batch."""
        self._step_listeners.append(listener)

    # -- submitting --------------------------------------------------------------------------

    def resolve(self, request: GenerateRequest) -> Job:
        """The request with defaults filled in, checked against this server's limits.

        ``max_batch_size`` bounds the images of one model call (the usual guard against running
        out of accelerator memory), so a request asking for more images is refused here.
        """
        if request.num_outputs > self.max_batch_size:
            raise InvalidRequest(
                "num_outputs",
                f"num_outputs must be <= {self.max_batch_size} on this server (MAX_BATCH_SIZE), "
                f"got {request.num_outputs}",
            )
        return resolve(request, self.defaults, self.limits)

    def _enqueue(self, job: Job) -> _Ticket:
        now = time.monotonic()
        ticket = _Ticket(job, self.model.batch_key(job), now, now + self.request_timeout_s)
        with self._cond:
            if self.phase != "ready":
                raise self._not_ready()
            if len(self._pending) >= self.max_queue_size:
                retry = max(
                    1, math.ceil(self._mean_batch_s * len(self._pending) / self.max_batch_size)
                )
                raise Overloaded(
                    f"the queue is full ({self.max_queue_size} requests waiting, "
                    f"MAX_QUEUE_SIZE); retry in {retry}s",
                    retry_after_s=retry,
                )
            self._pending.append(ticket)
            self._cond.notify_all()
        return ticket

    def _not_ready(self) -> NotReady:
        if self.phase == "failed":
            return NotReady(f"the model failed to load: {self.load_error}", permanent=True)
        if self.phase == "stopped":
            return NotReady("the server is shutting down")
        return NotReady("the model is still loading; retry when GET /ready answers 200")

    def _timeout_error(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request did not finish within {self.request_timeout_s:g}s (REQUEST_TIMEOUT_S)"
        )

    def _abandon(self, ticket: _Ticket) -> None:
        """The caller has gone: free its queue slot now, or let its running batch stop early."""
        if ticket.abandon():
            with self._cond:
                if ticket in self._pending:
                    self._pending.remove(ticket)
                    self.stats.dropped_requests += 1

    def generate(self, request: GenerateRequest) -> GenerateResult:
        """Blocking: validate, queue, wait for the batch, encode. Safe from any thread."""
        started = time.monotonic()
        job = self.resolve(request)
        ticket = self._enqueue(job)
        try:
            output = ticket.future.result(timeout=max(0.0, ticket.deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            self._abandon(ticket)
            raise self._timeout_error() from None
        except BaseException:
            self._abandon(ticket)
            raise
        return self._finish(job, output, started)

    async def submit(self, request: GenerateRequest) -> GenerateResult:
        """Async: like ``generate`` without blocking the event loop.

        Cancelling the awaiting task (a client that disconnected) abandons the request.
        """
        started = time.monotonic()
        job = self.resolve(request)
        ticket = self._enqueue(job)
        try:
            output = await asyncio.wait_for(
                asyncio.wrap_future(ticket.future),
                timeout=max(0.0, ticket.deadline - time.monotonic()),
            )
        except TimeoutError:
            self._abandon(ticket)
            raise self._timeout_error() from None
        except BaseException:
            self._abandon(ticket)
            raise
        return await asyncio.to_thread(self._finish, job, output, started)

    def _finish(self, job: Job, output: _Output, started: float) -> GenerateResult:
        encode_started = time.monotonic()
        images = [
            GeneratedImage(
                data=image_codec.encode(pixels, job.output_format),
                seed=seed,
                width=job.width,
                height=job.height,
                format=job.output_format,
                media_type=image_codec.MEDIA_TYPES[job.output_format],
            )
            for pixels, seed in zip(output.pixels, job.seeds, strict=True)
        ]
        done = time.monotonic()
        return GenerateResult(
            images=images,
            seed=job.seeds[0],
            model=self.model.name,
            batch_size=output.batch_images,
            timings=Timings(
                queue_ms=output.queue_s * 1000,
                inference_ms=output.inference_s * 1000,
                encode_ms=(done - encode_started) * 1000,
                total_ms=(done - started) * 1000,
            ),
        )

    # -- the worker --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._execute(batch)
            except Exception:  # a bug outside the model call must not end the worker
                log.exception("the engine failed a batch of %d requests", len(batch))
                error = ModelError("the server failed on this request; its log has the details")
                for ticket in batch:
                    if not ticket.future.done():
                        ticket.future.set_exception(error)

    def _next_batch(self) -> list[_Ticket] | None:
        """Wait for work, then for company, and take one batch off the queue."""
        with self._cond:
            while True:
                while not self._pending and self.phase == "ready":
                    self._cond.wait()
                if self.phase != "ready":
                    return None
                first = self._pending[0]
                if first.future.cancelled():  # its caller left while it waited
                    self._pending.popleft()
                    self.stats.dropped_requests += 1
                    continue
                # Waiting only pays when other callers are around: under sequential traffic it
                # would add MAX_WAIT_MS to every request and gain nothing.
                wait_until = first.enqueued + (self.max_wait_s if self._company_likely else 0.0)
                while True:
                    batch = self._compatible(first)
                    remaining = wait_until - time.monotonic()
                    if sum(t.job.num_outputs for t in batch) >= self.max_batch_size:
                        break
                    if remaining <= 0 or self.phase != "ready":
                        break
                    self._cond.wait(timeout=remaining)
                for ticket in batch:
                    self._pending.remove(ticket)
                return batch

    def _compatible(self, first: _Ticket) -> list[_Ticket]:
        """The oldest requests sharing ``first``'s key, up to ``max_batch_size`` images."""
        batch, size = [], 0
        for ticket in self._pending:
            if ticket.key != first.key:
                continue
            if batch and size + ticket.job.num_outputs > self.max_batch_size:
                break
            batch.append(ticket)
            size += ticket.job.num_outputs
        return batch

    def _execute(self, batch: list[_Ticket]) -> None:
        now = time.monotonic()
        live = []
        for ticket in batch:
            if not ticket.future.set_running_or_notify_cancel():
                self.stats.dropped_requests += 1
            elif now >= ticket.deadline:
                ticket.future.set_exception(self._timeout_error())
                self.stats.dropped_requests += 1
            else:
                live.append(ticket)
        if not live:
            return
        try:
            self._run_batch(live)
        finally:
            with self._cond:
                self._company_likely = len(live) > 1 or bool(self._pending)

    def _run_batch(self, live: list[_Ticket]) -> None:
        jobs = [t.job for t in live]
        size = sum(job.num_outputs for job in jobs)

        def progress(step: int, total: int) -> None:
            _notify(self._step_listeners, step, total)
            if all(t.abandoned for t in live):
                raise _BatchAbandoned

        started = time.monotonic()
        try:
            outputs = self.model.generate(jobs, progress)
            self._check_output(jobs, outputs)
        except _BatchAbandoned:
            self.stats.abandoned_batches += 1
            log.info("stopped a batch of %d images: every caller had gone", size)
            for ticket in live:
                ticket.future.set_exception(self._timeout_error())
            return
        except Exception as exc:
            self.stats.failed_batches += 1
            log.exception("model call failed for a batch of %d requests", len(live))
            error = (
                exc
                if isinstance(exc, InferenceError)
                else ModelError("the model failed on this request; the server log has the details")
            )
            for ticket in live:
                ticket.future.set_exception(error)
            return
        elapsed = time.monotonic() - started
        self.stats.model_calls += 1
        self.stats.images_generated += size
        self._mean_batch_s = (
            elapsed if not self._mean_batch_s else 0.8 * self._mean_batch_s + 0.2 * elapsed
        )
        _notify(self._batch_listeners, size, elapsed)
        for ticket, pixels in zip(live, outputs, strict=True):
            ticket.future.set_result(_Output(pixels, size, started - ticket.enqueued, elapsed))

    @staticmethod
    def _check_output(jobs: list[Job], outputs: list[list[np.ndarray]]) -> None:
        """A backend that returns the wrong number or shape of images fails loudly."""
        if len(outputs) != len(jobs):
            raise ModelError(f"the model returned {len(outputs)} results for {len(jobs)} requests")
        for job, images in zip(jobs, outputs, strict=True):
            if len(images) != job.num_outputs:
                raise ModelError(
                    f"the model returned {len(images)} images for a request of {job.num_outputs}"
                )
            for pixels in images:
                if pixels.shape != (job.height, job.width, 3) or pixels.dtype != np.uint8:
                    raise ModelError(
                        f"the model returned an image of {pixels.dtype} {pixels.shape}, "
                        f"expected uint8 {(job.height, job.width, 3)}"
                    )


def _notify(listeners: list[Callable[[int, float], None]], *args: float) -> None:
    """Call each listener; one that fails (metrics, logs) is logged and never fails a batch."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception:
            log.exception("listener %r failed", listener)
