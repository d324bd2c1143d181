"""The batching policy, free of models and threads of its own: queue, compatibility, waiting,
deadlines.

Callers ``put`` jobs (each with its ``batch_key``) and get a ``Ticket`` whose future the engine
completes; the engine's worker calls ``take`` for the next batch. ``take`` starts from the oldest
request and gathers queued requests with the same key until the batch holds ``max_batch_size``
images or the policy says to stop waiting. It waits for company only while traffic is
concurrent (the last batch held several requests, or requests arrived while it ran), so a lone
caller never waits. Two policies: ``cost`` (``engine.policy``: wait while the next request is
expected sooner than the call's fixed cost divided by the images queued, never holding a
request more than ``max_wait_s`` past the moment a worker could have started it) and
``greedy`` (the rule before it: wait until ``max_wait_s`` after the oldest arrived). Several
workers (one per device) may call ``take`` at once; each batch goes to exactly one. The queue
is bounded (a full queue refuses at once with a Retry-After estimated from recent batch times),
every request has a deadline, and a request abandoned before its batch starts is dropped.
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

from inference.engine.policy import (
    Arrivals,
    BatchPolicy,
    CostModel,
    DeclaredCost,
    Returns,
    wait_s,
)
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
        policy: BatchPolicy = "cost",
        declared_cost: DeclaredCost | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.policy = policy
        self.costs = CostModel(declared_cost, max_batch_size)
        self._arrivals = Arrivals()
        self._returns = Returns()
        self._last_done = 0.0
        self._clock = clock
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
        now = self._clock()
        deadline = now + self.request_timeout_s
        ticket = Ticket(job, key, now, deadline, progress=progress, preview=preview)
        with self._cond:
            self._arrivals.record(now)
            self._returns.arrived(now)
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

    def take(self, free_since: float | None = None) -> list[Ticket] | None:
        """Block for the next batch of live tickets (marked running); None once closed.

        ``free_since``: when the calling worker finished its last batch (monotonic), so the
        cost policy's hold counts from when a request could have run, not from its arrival.
        Tickets whose caller left are dropped; tickets past their deadline fail with a timeout.
        """
        while True:
            batch = self._next_batch(free_since)
            if batch is None:
                return None
            now = self._clock()
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
        ended = started + seconds if seconds is not None else self._clock()
        with self._cond:
            arrived = any(ticket.enqueued <= ended for ticket in self._pending)
            since = [ticket.enqueued for ticket in self._pending if ticket.enqueued >= ended]
            self._returns.batch_ended(ended, min(since, default=None))
            self._company_likely = len(batch) > 1 or arrived
            self._last_done = max(self._last_done, ended)
            if seconds is not None:
                images = sum(ticket.job.num_outputs for ticket in batch)
                self.costs.record(batch[0].key, images, seconds)
                self._mean_batch_s = (
                    seconds if not self._mean_batch_s else 0.8 * self._mean_batch_s + 0.2 * seconds
                )

    def _next_batch(self, free_since: float | None) -> list[Ticket] | None:
        """Wait for work, then for company, and take one batch off the queue."""
        with self._cond:
            while True:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:  # close() already handed every queued ticket back
                    return None
                first = self._pending[0]
                if first.future.cancelled():  # its caller left while it waited
                    self._pending.popleft()
                    self._on_drop()
                    continue
                batch = self._compatible(first)
                wait = self._wait_s(first, batch, free_since)
                if wait > 0:
                    # Any arrival wakes every waiting worker to decide again; another worker
                    # may have taken ``first`` meanwhile, so the loop starts from the queue.
                    self._cond.wait(timeout=wait)
                    continue
                for ticket in batch:
                    self._pending.remove(ticket)
                return batch

    def _wait_s(self, first: Ticket, batch: list[Ticket], free_since: float | None) -> float:
        """Seconds the policy would still wait for company before taking ``batch``."""
        queued = sum(t.job.num_outputs for t in batch)
        # Waiting only pays when other callers are around: under sequential traffic it
        # would add to every request and gain nothing.
        if queued >= self.max_batch_size or not self._company_likely:
            return 0.0
        now = self._clock()
        if self.policy == "greedy":
            return max(0.0, first.enqueued + self.max_wait_s - now)
        cost = self.costs.cost(first.key)
        if cost is None:
            return 0.0
        could_run = max(first.enqueued, free_since if free_since is not None else 0.0)
        return wait_s(
            queued=queued,
            max_batch=self.max_batch_size,
            fixed_s=cost.fixed_s,
            typical_gap_s=self._arrivals.typical_gap(),
            last_event=max(self._arrivals.last or 0.0, self._last_done),
            now=now,
            hold_until=could_run + self.max_wait_s,
            returns_at=self._returns.due(self._last_done),
        )

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
