"""The leaky-bucket meter: admit until full, reject without change, drain at the rate."""

from __future__ import annotations

import pytest

from lb.admission.bucket import Meter, decide, fits, leaked


def test_burst_admits_exactly_capacity_and_rejects_change_nothing() -> None:
    meter = Meter(0.0, 0.0)
    results = [meter.check(0.0, 5, 1.0) for _ in range(20)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 15
    # the rejected 15 did not raise the level: one second later exactly one fits again
    assert meter.level == pytest.approx(5.0)
    assert meter.check(1.0, 5, 1.0).allowed
    assert not meter.check(1.0, 5, 1.0).allowed


def test_remaining_counts_down_and_reset_says_when_the_whole_quota_is_back() -> None:
    meter = Meter(0.0, 0.0)
    decisions = [meter.check(0.0, 5, 1.0) for _ in range(5)]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    # draft-11 `t`: seconds until the bucket has drained empty (level n at 1/s: n s)
    assert [d.reset for d in decisions] == [1, 2, 3, 4, 5]
    assert meter.check(0.0, 5, 1.0).reset == 5
    rejected = meter.check(0.0, 5, 1.0)
    assert (rejected.allowed, rejected.remaining, rejected.retry_after) == (False, 0, 1)
    later = Meter(5.0, 0.0).check(2.5, 5, 1.0)  # 2.5 left + the one admitted: 3.5 s -> 4
    assert (later.allowed, later.reset) == (True, 4)


def test_retry_after_is_the_ceiling_of_the_real_wait_and_at_least_one() -> None:
    meter = Meter(0.0, 0.0)
    for _ in range(2):
        assert meter.check(0.0, 2, 0.25).allowed  # one unit drains in 4 s
    assert meter.check(0.0, 2, 0.25).retry_after == 4
    assert meter.check(2.5, 2, 0.25).retry_after == 2  # 1.5 s left -> 2
    assert meter.check(3.99, 2, 0.25).retry_after == 1  # 0.01 s left -> at least 1
    assert meter.check(4.0, 2, 0.25).allowed


def test_fast_rate_wait_below_a_second_still_says_one() -> None:
    meter = Meter(0.0, 0.0)
    for _ in range(3):
        meter.check(0.0, 3, 100.0)
    rejected = meter.check(0.0, 3, 100.0)
    assert not rejected.allowed
    assert rejected.wait == pytest.approx(0.01)
    assert rejected.retry_after == 1 and rejected.reset == 1


def test_drained_bucket_gives_the_full_burst_again() -> None:
    meter = Meter(0.0, 0.0)
    assert sum(meter.check(0.0, 5, 1.0).allowed for _ in range(20)) == 5
    assert sum(meter.check(5.0, 5, 1.0).allowed for _ in range(20)) == 5
    # half drained: only the drained part is available
    assert sum(meter.check(7.5, 5, 1.0).allowed for _ in range(20)) == 2


def test_steady_rate_at_the_leak_rate_is_never_rejected() -> None:
    meter = Meter(0.0, 0.0)
    assert all(meter.check(t * 0.1, 1, 10.0).allowed for t in range(1000))


def test_float_rounding_does_not_reject_a_request_that_fits() -> None:
    meter = Meter(0.0, 0.0)
    # 0.1 s steps at 10/s leak exactly one unit each, even with float error
    for step in range(1, 50):
        meter.check(step * 0.1, 3, 10.0)
    assert fits(2.0000000000001, 3)
    assert leaked(1.0, 0.1, 10.0) == 0.0


def test_clock_going_backwards_does_not_refill() -> None:
    meter = Meter(0.0, 10.0)
    for _ in range(2):
        meter.check(10.0, 2, 1.0)
    assert not meter.check(9.0, 2, 1.0).allowed


def test_decide_describes_admitted_and_rejected_levels() -> None:
    admitted = decide(True, 1.0, 5, 1.0)
    assert (admitted.remaining, admitted.reset, admitted.wait) == (4, 1, 0.0)
    assert decide(True, 0.0, 5, 1.0).reset == 0  # empty: the whole quota is there
    full = decide(True, 5.0, 5, 2.0)
    assert (full.remaining, full.reset) == (0, 3)
    rejected = decide(False, 4.5, 5, 1.0)
    assert (rejected.remaining, rejected.retry_after) == (0, 1)
    assert rejected.wait == pytest.approx(0.5)
