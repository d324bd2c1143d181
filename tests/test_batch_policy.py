"""The cost-aware batching rule (engine.policy) and the batcher that applies it, on made-up
times: no sleeps, no clock of the machine's."""

from __future__ import annotations

import pytest

from inference.engine.batcher import Batcher
from inference.engine.policy import Arrivals, Cost, CostModel, declared_cost, fit_cost, wait_s
from inference.schema import Job


def decide(queued: int, gap: float | None, *, now: float = 1.0, last: float = 1.0) -> float:
    """The stand-in accelerator's shape: 40 ms fixed, batches of 8, a 10 ms hold from t=1."""
    return wait_s(
        queued=queued,
        max_batch=8,
        fixed_s=0.04,
        typical_gap_s=gap,
        last_event=last,
        now=now,
        hold_until=1.010,
    )


def test_waits_while_the_next_request_is_worth_more_than_its_gap() -> None:
    # 4 queued: one more image is worth a gap under 40/4 = 10 ms; arrivals come every 1 ms.
    assert decide(4, 0.001) == pytest.approx(0.010)
    # The same burst, but the silence since the last arrival already ran 3 ms: wait out the rest.
    assert decide(4, 0.001, now=1.003, last=1.0) == pytest.approx(0.007)
    # 7 queued: worth a gap under 5.7 ms, so waiting ends 5.7 ms after the last event.
    assert decide(7, 0.001) == pytest.approx(0.04 / 7)


def test_takes_the_batch_now_when_waiting_cannot_pay() -> None:
    assert decide(8, 0.001) == 0.0  # full
    assert decide(4, 0.020) == 0.0  # requests come every 20 ms: 4 x 20 > 40 ms fixed
    assert decide(1, None) == 0.0  # no gaps known yet: no evidence of company
    assert decide(4, 0.001, now=1.011, last=1.0) == 0.0  # the hold bound has passed
    assert decide(4, 0.001, now=1.006, last=0.995) == 0.0  # 11 ms of silence: the burst ended


def test_the_hold_bound_caps_the_wait() -> None:
    # A single image is worth a 40 ms gap, but MAX_WAIT_MS (10 ms from t=1) comes first.
    assert decide(1, 0.001) == pytest.approx(0.010)


def test_the_fit_separates_the_fixed_part_from_the_per_image_part() -> None:
    samples = [(n, 0.04 + 0.01 * n) for n in (1, 4, 8, 3, 8)]
    cost = fit_cost(samples)
    assert cost is not None
    assert cost.fixed_s == pytest.approx(0.04) and cost.per_image_s == pytest.approx(0.01)
    assert fit_cost([]) is None
    # One batch size only: the whole call counts as fixed (an upper bound).
    assert fit_cost([(8, 0.12), (8, 0.12)]) == Cost(fixed_s=pytest.approx(0.12), per_image_s=0.0)
    # Noise that tilts the line below zero never gives a negative part.
    tilted = fit_cost([(1, 0.05), (8, 0.04)])
    assert tilted is not None and tilted.per_image_s == 0.0 and tilted.fixed_s > 0


def test_a_declared_cost_wins_over_the_calls_made() -> None:
    model = CostModel(lambda n: 0.2 + 0.05 * n, max_batch=8)
    model.record("k", 8, 99.0)
    cost = model.cost("k")
    assert cost is not None
    assert cost.fixed_s == pytest.approx(0.2) and cost.per_image_s == pytest.approx(0.05)
    assert declared_cost(lambda n: 0.3, 1) == Cost(0.3, 0.0)
    learned = CostModel()
    learned.record(("a",), 2, 0.06)
    learned.record(("a",), 6, 0.10)
    assert learned.cost(("b",)) is None  # each batch key learns its own curve
    assert learned.cost(("a",)) == Cost(pytest.approx(0.04), pytest.approx(0.01))


def test_the_typical_gap_is_the_median_so_a_burst_is_not_hidden_by_the_pause_after_it() -> None:
    arrivals = Arrivals()
    assert arrivals.typical_gap() is None
    t = 0.0
    for _ in range(2):  # two bursts of 8, 1 ms apart, 120 ms between them
        for _ in range(8):
            arrivals.record(t)
            t += 0.001
        t += 0.120
    assert arrivals.typical_gap() == pytest.approx(0.001)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(seed: int) -> Job:
    return Job(
        prompt="p",
        negative_prompt="",
        seeds=(seed,),
        prompt_weight=1.0,
        steps=1,
        width=64,
        height=64,
        output_format="png",
    )


def batcher(clock: FakeClock, policy: str = "cost") -> Batcher:
    return Batcher(
        max_batch_size=8,
        max_wait_s=0.010,
        max_queue_size=64,
        request_timeout_s=60,
        policy=policy,  # type: ignore[arg-type]
        clock=clock,
    )


def test_a_lone_caller_is_never_held() -> None:
    clock = FakeClock()
    queue = batcher(clock)
    for seed in range(20):  # one request at a time, each after the last finished
        queue.put(job(seed), "k")
        batch = queue.take(free_since=clock.now)
        assert batch is not None and len(batch) == 1
        assert queue._wait_s(batch[0], batch, clock.now) == 0.0
        queue.done(batch, 0.05, clock.now)
        clock.now += 0.06


def test_after_a_shared_batch_the_batcher_holds_for_the_callers_it_just_answered() -> None:
    clock = FakeClock()
    queue = batcher(clock)
    queue.costs.record("k", 1, 0.05)
    queue.costs.record("k", 4, 0.08)  # fixed 40 ms, 10 ms an image
    tickets = []
    for seed in range(4):  # a burst, 1 ms apart
        tickets.append(queue.put(job(seed), "k"))
        clock.now += 0.001
    batch = queue.take(free_since=clock.now)
    assert batch is not None and len(batch) == 4  # nothing had run: no company yet is assumed
    for seed in range(4, 8):  # four more arrive while it runs
        queue.put(job(seed), "k")
        clock.now += 0.001
    clock.now += 0.08
    queue.done(batch, 0.08, clock.now - 0.08)
    waiting = queue._pending[0]
    # Four queued, the four just answered are expected back: hold (up to 10 ms), unlike greedy,
    # whose bound ran out 80 ms ago while the four sat behind the running batch.
    assert queue._wait_s(waiting, list(queue._pending), clock.now) == pytest.approx(0.010)
    queue.policy = "greedy"
    assert queue._wait_s(waiting, list(queue._pending), clock.now) == 0.0


def test_the_engine_reads_a_models_declared_cost() -> None:
    from inference.engine import Engine
    from inference.models.mock import MockModel
    from inference.settings import Settings

    class Declared(MockModel):
        def cost(self, batch_size: int) -> float:
            return 0.5 + 0.1 * batch_size

    costs = Engine(Declared(), Settings(max_batch_size=4)).batcher.costs
    assert costs.cost("any key") == Cost(pytest.approx(0.5), pytest.approx(0.1))
    assert Engine(MockModel(), Settings()).batcher.costs.cost("any key") is None
