"""The batching policy, free of models and threads of its own: queue, compatibility, waiting,
deadlines.

Callers ``put`` jobs (each with its ``batch_key``) and get a ``Ticket`` whose future the engine
completes; the engine's worker calls ``take`` for the next batch. ``take`` starts from the oldest
request, gathers queued requests with the same key until the batch holds ``max_batch_size``
images or ``max_wait_s`` has passed since the oldest arrived. It waits for company only while
traffic is concurrent (the last batch held several requests, or requests arrived while it ran),
so a lone caller never pays ``max_wait_s``. The queue is bounded (a full queue refuses at once
with a Retry-After estimated from recent batch times), every request has a deadline, and a
request abandoned before its batch starts is dropped.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from inference.errors import Overloaded, RequestTimeout
from inference.schema import Job

#: Called with (step, total steps) as the batch holding a request runs.
Progress = Callable[[int, int], None]
#: Called with (step, total steps, render) as the batch holding a request runs, where
#: ``render()`` returns this request's current images (HxWx3 uint8, one per output). Rendering
#: costs time on the worker, so a caller renders only the steps it wants, during the call.
Preview = Callable[[int, int, Callable[[], list[Any]]], None]


class Closed(Exception):
    """``put`` after ``close``: the engine turns it into its own NotReady."""


@dataclass(eq=False)
class Ticket:
    """One queued request; the engine sets its future's result once its batch has run."""

    job: Job
    key: Hashable
    enqueued: float
    deadline: float
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    progress: Progress | None = None
    preview: Preview | None = None
    abandoned: bool = False


class Batcher:
    """A bounded queue of tickets and the rule that groups them into batches."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_size: int,
        request_timeout_s: float,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self.request_timeout_s = request_timeout_s
        self._on_drop = on_drop
        self._pending: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._mean_batch_s = 0.0
        # Whether the last batch saw concurrent demand; a lone caller does not wait for company.
        self._company_likely = False

    @property
    def depth(self) -> int:
        return len(self._pending)

    def timeout_error(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request did not finish within {self.request_timeout_s:g}s (REQUEST_TIMEOUT_S)"
        )

    def put(
        self,
        job: Job,
        key: Hashable,
        progress: Progress | None = None,
        preview: Preview | None = None,
    ) -> Ticket:
        """Queue ``job``; raises ``Overloaded`` when the queue is full, ``Closed`` after close."""
        now = time.monotonic()
        deadline = now + self.request_timeout_s
        ticket = Ticket(job, key, now, deadline, progress=progress, preview=preview)
        with self._cond:
            if self._closed:
                raise Closed
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

    def abandon(self, ticket: Ticket) -> None:
        """The caller has gone: free its queue slot now, or let its running batch stop early."""
        ticket.abandoned = True
        if ticket.future.cancel():
            with self._cond:
                if ticket in self._pending:
                    self._pending.remove(ticket)
                    self._on_drop()

    def close(self) -> list[Ticket]:
        """Refuse new work, wake ``take``, and hand back the tickets still queued."""
        with self._cond:
            self._closed = True
            pending, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        return pending

    def take(self) -> list[Ticket] | None:
        """Block for the next batch of live tickets (marked running); None once closed.

        Tickets whose caller left are dropped; tickets past their deadline fail with a timeout.
        """
        while True:
            batch = self._next_batch()
            if batch is None:
                return None
            now = time.monotonic()
            live = []
            for ticket in batch:
                if not ticket.future.set_running_or_notify_cancel():
                    self._on_drop()
                elif now >= ticket.deadline:
                    ticket.future.set_exception(self.timeout_error())
                    self._on_drop()
                else:
                    live.append(ticket)
            if live:
                return live

    def done(self, batch: list[Ticket], seconds: float | None, started: float) -> None:
        """Record a finished batch that started at ``started`` (monotonic): its duration (None
        if it failed) and whether it had company.

        Company is a request that arrived while the batch ran, not one sent after its result:
        a lone caller's next request can reach the queue before this is called."""
        ended = started + seconds if seconds is not None else time.monotonic()
        with self._cond:
            arrived = any(ticket.enqueued <= ended for ticket in self._pending)
            self._company_likely = len(batch) > 1 or arrived
            if seconds is not None:
                self._mean_batch_s = (
                    seconds if not self._mean_batch_s else 0.8 * self._mean_batch_s + 0.2 * seconds
                )

    def _next_batch(self) -> list[Ticket] | None:
        """Wait for work, then for company, and take one batch off the queue."""
        with self._cond:
            while True:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                first = self._pending[0]
                if first.future.cancelled():  # its caller left while it waited
                    self._pending.popleft()
                    self._on_drop()
                    continue
                # Waiting only pays when other callers are around: under sequential traffic it
                # would add max_wait_s to every request and gain nothing.
                wait_until = first.enqueued + (self.max_wait_s if self._company_likely else 0.0)
                while True:
                    batch = self._compatible(first)
                    remaining = wait_until - time.monotonic()
                    if sum(t.job.num_outputs for t in batch) >= self.max_batch_size:
                        break
                    if remaining <= 0 or self._closed:
                        break
                    self._cond.wait(timeout=remaining)
                if self._closed:  # close() already handed every queued ticket back
                    return None
                for ticket in batch:
                    self._pending.remove(ticket)
                return batch

    def _compatible(self, first: Ticket) -> list[Ticket]:
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
