"""Outlier ejection: consecutive failures, growing ejection times, the ejected-share cap."""

from __future__ import annotations

import pytest

from lb.upstream.outlier import OutlierDetector, max_ejected
from tests.lb.upstream.support import FakeClock


def make(clock: FakeClock) -> OutlierDetector:
    return OutlierDetector(clock=clock, consecutive_failures=3, base_ejection=5, max_ejection=12)


def test_consecutive_failures_ask_for_ejection_and_a_success_resets_them() -> None:
    detector = make(FakeClock())
    assert not detector.record(True)
    assert not detector.record(True)
    assert not detector.record(False)
    assert not detector.record(True)
    assert not detector.record(True)
    assert detector.record(True)


def test_ejection_time_grows_with_each_ejection_up_to_the_cap() -> None:
    clock = FakeClock()
    detector = make(clock)
    durations = []
    for _ in range(4):
        durations.append(detector.eject("reset"))
        assert detector.ejected
        clock.advance(durations[-1])
        assert detector.expired()
        detector.restore()
        assert not detector.ejected
    assert durations == [5, 10, 12, 12]


def test_time_back_in_rotation_forgives_past_ejections() -> None:
    clock = FakeClock()
    detector = make(clock)
    for _ in range(2):
        clock.advance(detector.eject("timeout"))
        detector.restore()
    clock.advance(5)  # one base period in good standing forgives one ejection
    assert detector.eject("timeout") == 10


def test_not_expired_before_its_time() -> None:
    clock = FakeClock()
    detector = make(clock)
    detector.eject("connect_failure")
    clock.advance(4.99)
    assert not detector.expired()
    assert detector.ejected


@pytest.mark.parametrize(
    ("ratio", "backends", "expected"),
    [(0.5, 3, 1), (0.5, 4, 2), (0.1, 3, 1), (0.0, 3, 0), (1.0, 3, 3), (0.34, 3, 1), (0.67, 3, 2)],
)
def test_max_ejected(ratio: float, backends: int, expected: int) -> None:
    assert max_ejected(ratio, backends) == expected
