"""One model call per batch, and what the calls report: counters and listeners.

The engine (``core``) decides when a batch runs and on which thread; this decides what one call
does with its callers. Each step reaches the step listeners and every live caller's
``progress``; the call stops at its next step once the engine stops or every caller has gone;
and every ticket ends with its images or the one error its batch earned, so a failing call
fails only its own batch. Kept apart from the lifecycle so these rules read in one place.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from inference.engine.batcher import Ticket
from inference.engine.encoding import Output
from inference.engine.outputs import batch_preview, checked, notify
from inference.errors import InferenceError, ModelError, NotReady, RequestTimeout
from inference.models.base import Model

log = logging.getLogger(__name__)

BatchListener = Callable[[int, float], None]
StepListener = Callable[[int, int], None]


class _BatchAbandoned(Exception):
    """Raised from the progress callback when every caller of the running batch has gone."""


class _Stopped(Exception):
    """Raised from the progress callback when the engine stops under a running batch."""


@dataclass
class EngineStats:
    """Counters for GET /, the CLI and Prometheus (``http.metrics`` exports each one)."""

    model_calls: int = 0
    images_generated: int = 0
    failed_batches: int = 0
    abandoned_batches: int = 0
    dropped_requests: int = 0
    load_s: float | None = None
    warmup_s: float | None = None


class ModelCalls:
    """Runs the model on one batch at a time, on the engine's worker thread.

    The engine's state reaches it as callables (``stopped``, ``not_ready``, ``timed_out``), read
    at the moment a call needs them, so this module never imports the engine.
    """

    def __init__(
        self,
        model: Model,
        stats: EngineStats,
        stopped: Callable[[], bool],
        not_ready: Callable[[], NotReady],
        timed_out: Callable[[], RequestTimeout],
    ) -> None:
        self.model = model
        self.stats = stats
        self.stopped = stopped
        self.not_ready = not_ready
        self.timed_out = timed_out
        self.batch_listeners: list[BatchListener] = []
        self.step_listeners: list[StepListener] = []
        # Previews are an optional extension of the model protocol (models.base).
        self.previews = "preview" in inspect.signature(model.generate).parameters

    def run(self, live: list[Ticket]) -> float | None:
        """One model call; each ticket gets its images or the batch's error. Returns seconds."""
        jobs = [t.job for t in live]
        size = sum(job.num_outputs for job in jobs)

        def progress(step: int, total: int) -> None:
            notify(self.step_listeners, step, total)
            for ticket in live:
                if ticket.progress is not None and not ticket.abandoned:
                    notify([ticket.progress], step, total)
            if self.stopped():
                raise _Stopped
            if all(t.abandoned for t in live):
                raise _BatchAbandoned

        preview = batch_preview(live) if self.previews else None
        started = time.monotonic()
        try:
            if preview is None:
                outputs = checked(jobs, self.model.generate(jobs, progress))
            else:
                outputs = checked(jobs, self.model.generate(jobs, progress, preview=preview))
        except _Stopped:
            log.warning("stopped a running batch of %d images: the server is shutting down", size)
            for ticket in live:
                ticket.future.set_exception(self.not_ready())
            return None
        except _BatchAbandoned:
            self.stats.abandoned_batches += 1
            log.info("stopped a batch of %d images: every caller had gone", size)
            for ticket in live:
                ticket.future.set_exception(self.timed_out())
            return None
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
            return None
        elapsed = time.monotonic() - started
        self.stats.model_calls += 1
        self.stats.images_generated += size
        notify(self.batch_listeners, size, elapsed)
        for ticket, (pixels, nsfw) in zip(live, outputs, strict=True):
            queued = started - ticket.enqueued
            ticket.future.set_result(Output(pixels, size, queued, elapsed, nsfw))
        return elapsed
