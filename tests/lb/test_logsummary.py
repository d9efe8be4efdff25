"""Repeated warnings fold into one line per kind per interval, with the count (pure)."""

from __future__ import annotations

import logging

import pytest

from lb.logsummary import LogSummary
from tests.support.clock import FakeClock


def test_a_storm_of_one_kind_is_one_line_now_and_one_count_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    logs = LogSummary(logging.getLogger("t"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(1000):
            logs.warning("not ejected", "backend %s not ejected", "b1")
            logs.warning("other", "other thing %d", i)
            clock.advance(0.005)  # 5 s of it
        assert len(caplog.records) == 2
        clock.advance(6)
        logs.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert "backend b1 not ejected (and 999 more like this in 11 s)" in lines
    assert "other thing 999 (and 999 more like this in 11 s)" in lines


def test_a_kind_quiet_for_an_interval_logs_at_once_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    logs = LogSummary(logging.getLogger("t"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        logs.warning("k", "one")
        clock.advance(11)
        logs.flush()  # nothing folded: nothing to say
        logs.warning("k", "two")
    assert [r.getMessage() for r in caplog.records] == ["one", "two"]
