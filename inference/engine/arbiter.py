"""One device, shared in turn by every version that runs on it (issue 23).

Each registry version has its own engine: its own queue, batcher and worker per device. Left
alone, two versions on one GPU would run their model calls at once: each call slower, memory for
two activations, and who goes next decided by the OS scheduler, so a saturated version could
keep a quiet one waiting. A worker therefore holds its device's arbiter for each model call and
hands it back after; when several versions wait, the device goes to them in turn.

The turn order is round robin by call, in the order the workers asked: a released device goes
straight to the longest waiter (a handoff, so the releasing worker, whose next batch is already
queued, cannot take it back first). Each version has one worker per device, so it waits at most
once at a time on an arbiter, and a quiet version's request waits for at most one call of each
other busy version, then its own call: the bound the issue asks for, with nothing to estimate.
Deficit round robin weighted by batch cost would share device *time* evenly instead (round
robin gives a version whose calls cost 10 times as much 10 times the time), but it needs each
version's next call's cost before it runs and makes a slow version wait several turns; the
batcher already amortises a call over its batch, so per-call turns are the simpler honest rule.

A lone version pays an uncontended lock: two short critical sections per call (about a
microsecond, measured in docs/fleet.md), against model calls of milliseconds to seconds.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType
from typing import ClassVar


class DeviceArbiter:
    """A fair (first come, first served) lock on one device; see the module docstring."""

    _shared: ClassVar[dict[str, DeviceArbiter]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, device: str) -> None:
        self.device = device
        self._mutex = threading.Lock()
        self._held = False
        #: One locked gate per waiting worker, oldest first; the holder opens the next one.
        self._waiters: deque[threading.Lock] = deque()

    @classmethod
    def of(cls, device: str) -> DeviceArbiter:
        """The process's one arbiter for ``device`` (a name from ``models.devices``): every
        engine with a replica there shares it."""
        with cls._shared_lock:
            arbiter = cls._shared.get(device)
            if arbiter is None:
                arbiter = cls._shared[device] = cls(device)
            return arbiter

    @property
    def waiting(self) -> int:
        """Workers waiting for the device now."""
        return len(self._waiters)

    def acquire(self) -> None:
        """Block until the device is this caller's: at once if it is free and nobody waits."""
        with self._mutex:
            if not self._held:
                self._held = True
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        gate.acquire()  # opened by release(), which hands the device over still held

    def release(self) -> None:
        """Hand the device to the longest waiter, or free it."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False

    def __enter__(self) -> DeviceArbiter:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
