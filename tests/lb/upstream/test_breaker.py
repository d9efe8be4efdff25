"""Circuit breaker: closed -> open on a failure ratio -> one half-open probe -> closed/open."""

from __future__ import annotations

from lb.upstream.breaker import Breaker, BreakerState
from tests.lb.upstream.support import FakeClock


def make(clock: FakeClock, **kw: float) -> tuple[Breaker, list[BreakerState]]:
    changes: list[BreakerState] = []
    options = {"failure_ratio": 0.5, "min_requests": 10, "window": 10.0, "open_seconds": 5.0}
    options.update(kw)
    breaker = Breaker(
        clock=clock,
        failure_ratio=options["failure_ratio"],
        min_requests=int(options["min_requests"]),
        window=options["window"],
        open_seconds=options["open_seconds"],
        on_change=changes.append,
    )
    return breaker, changes


def trip(breaker: Breaker, failures: int = 10) -> None:
    for _ in range(failures):
        assert breaker.acquire()
        breaker.record(True)


def test_stays_closed_below_the_minimum_request_count() -> None:
    breaker, _ = make(FakeClock())
    trip(breaker, 9)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.available()


def test_opens_at_the_failure_ratio_and_rejects_everything() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    for i in range(20):
        breaker.record(i % 2 == 0)  # 50 % failures over 20 requests
    assert breaker.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]
    assert not breaker.available()
    assert not breaker.acquire()
    clock.advance(4.9)
    assert not breaker.acquire()


def test_below_the_ratio_it_stays_closed() -> None:
    breaker, _ = make(FakeClock())
    for i in range(30):
        breaker.record(i % 3 == 0)  # 33 % failures
    assert breaker.state is BreakerState.CLOSED


def test_old_failures_leave_the_window() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    for _ in range(9):
        breaker.record(True)
    clock.advance(11)  # the window is 10 s
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    trip(breaker)
    clock.advance(5)
    assert breaker.state is BreakerState.HALF_OPEN
    admitted = sum(breaker.acquire() for _ in range(50))
    assert admitted == 1
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN]


def test_probe_success_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    trip(breaker)
    clock.advance(5)
    assert breaker.acquire()
    breaker.record(False)
    assert breaker.state is BreakerState.CLOSED
    assert changes[-1] is BreakerState.CLOSED
    # the failures that opened it are forgotten
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


def test_probe_failure_opens_it_again_for_the_full_time() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    trip(breaker)
    clock.advance(5)
    assert breaker.acquire()
    breaker.record(True)
    assert breaker.state is BreakerState.OPEN
    clock.advance(4.9)
    assert not breaker.acquire()
    clock.advance(0.1)
    assert breaker.acquire()
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
    ]


def test_a_cancelled_probe_frees_the_permit() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)
    clock.advance(5)
    assert breaker.acquire()
    assert not breaker.acquire()
    breaker.release()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire()


def test_late_results_while_open_change_nothing() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    trip(breaker)
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN


def test_ratio_zero_disables_the_breaker() -> None:
    breaker, _ = make(FakeClock(), failure_ratio=0.0)
    trip(breaker, 100)
    assert breaker.state is BreakerState.CLOSED
