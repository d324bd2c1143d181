"""The cost policy's expectation of when answered callers come back (``policy.Returns``): a hold
that ends before anyone is due back idles the device for nobody, so the batch goes at once.
Made-up times, no sleeps."""

from __future__ import annotations

import pytest

from inference.engine.batcher import Batcher
from inference.engine.policy import Returns, wait_s
from tests.test_batch_policy import FakeClock, job


def decide(queued: int, returns_at: float) -> float:
    """40 ms fixed, batches of 8, a burst 1 ms apart, a 10 ms hold from t=1."""
    return wait_s(
        queued=queued,
        max_batch=8,
        fixed_s=0.04,
        typical_gap_s=0.001,
        last_event=1.0,
        now=1.0,
        hold_until=1.010,
        returns_at=returns_at,
    )


def test_a_return_due_after_the_hold_ends_means_no_wait() -> None:
    assert decide(3, returns_at=1.013) == 0.0  # back in 13 ms, the hold ends in 10
    assert decide(3, returns_at=1.010) == 0.0
    assert decide(3, returns_at=1.004) == pytest.approx(0.010)  # due within the hold: wait
    assert decide(3, returns_at=float("-inf")) == pytest.approx(0.010)  # nothing learnt yet


def test_returns_are_due_after_the_quickest_recent_delay_from_a_batch_end() -> None:
    returns = Returns()
    assert returns.due(5.0) == float("-inf")
    for end, delay in ((1.0, 0.015), (2.0, 0.013), (3.0, 0.2)):
        returns.batch_ended(end, None)
        returns.arrived(end - 0.05)  # queued while the batch ran: not a return
        returns.arrived(end + delay)
        returns.arrived(end + delay + 0.001)  # only the first arrival after the end counts
    assert returns.due(5.0) == pytest.approx(5.013)
    returns.batch_ended(4.0, first_arrival_after=4.004)  # already queued when the end is seen
    assert returns.due(5.0) == pytest.approx(5.004)


@pytest.mark.parametrize(("turnaround_s", "held"), [(0.013, False), (0.003, True)])
def test_a_group_queued_behind_a_call_waits_only_for_callers_due_within_the_hold(
    turnaround_s: float, held: bool
) -> None:
    """Eight closed-loop clients split 3 / 5: the five queue while the three's call runs. When
    it ends, the three come back ``turnaround_s`` later (as the batcher has seen them do):
    after the 10 ms hold, the five go at once; within it, they are held for the three."""
    clock = FakeClock()
    queue = Batcher(
        max_batch_size=8, max_wait_s=0.010, max_queue_size=64, request_timeout_s=60, clock=clock
    )
    for seed in range(3):  # a caller's calls of 50 ms, each next request turnaround_s later
        queue.put(job(seed), "k")
        lone = queue.take(free_since=clock.now)
        assert lone is not None
        queue.done(lone, 0.05, clock.now)
        clock.now += 0.05 + turnaround_s
    for seed in range(3):
        queue.put(job(10 + seed), "k")
    running = queue.take(free_since=clock.now)
    assert running is not None and len(running) == 3
    started = clock.now
    clock.now += 0.001
    for seed in range(5):
        queue.put(job(20 + seed), "k")
    clock.now = started + 0.07
    queue.done(running, 0.07, started)
    waiting = list(queue._pending)
    wait = queue._wait_s(waiting[0], waiting, clock.now)
    if held:  # up to 40 ms / 5 queued: one more image is worth a gap under 8 ms
        assert wait == pytest.approx(0.008)
    else:
        assert wait == 0.0
