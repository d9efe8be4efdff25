"""The overload Locust profiles and their verdict: goodput and admitted p95, shedding expected."""

from __future__ import annotations

from types import SimpleNamespace

from loadtest import names
from loadtest.profiles import FLASH, OVERLOAD, load_profile
from loadtest.report import run_seconds
from loadtest.shape import stages, target_at
from loadtest.thresholds import Sample, evaluate, thresholds_for


def flat(name: str, requests: int, ms: int, failures: int = 0) -> Sample:
    return Sample(name, requests, failures, {ms: requests})


def test_flash_brings_ten_times_the_users_within_ten_seconds_and_fits_ci() -> None:
    assert load_profile({"LOADTEST_PROFILE": "flash"}) is FLASH
    assert FLASH.peak_users >= 10 * FLASH.buildup_users
    assert FLASH.spike_seconds <= 10
    plan = stages(FLASH)
    spike_start = FLASH.baseline_seconds + FLASH.buildup_seconds
    assert target_at(plan, spike_start - 0.1).users == FLASH.buildup_users  # type: ignore[union-attr]
    assert target_at(plan, spike_start + 1).users == FLASH.peak_users  # type: ignore[union-attr]
    spike = next(s for s in plan if s.name == "spike")
    assert spike.spawn_rate * FLASH.spike_seconds >= FLASH.peak_users - FLASH.buildup_users
    assert FLASH.duration <= 45


def test_overload_offers_far_more_than_peak() -> None:
    assert load_profile({"LOADTEST_PROFILE": "overload"}) is OVERLOAD
    # users with almost no think time: each offers several requests per second
    assert OVERLOAD.peak_users / max(OVERLOAD.think_max, 0.05) >= 3000


def test_shed_answers_are_expected_and_goodput_and_admitted_p95_are_judged() -> None:
    limits = thresholds_for("flash")
    run = [
        flat(names.TOURS_LIST, 900, 80),
        flat(names.BOOKING_PAY, 100, 300),
        # thousands shed: expected (the users waited Retry-After), not failures, not latency
        flat(names.expected(names.TOURS_LIST, "503 overloaded"), 5000, 5),
    ]
    checks = {c.name: c for c in evaluate(run, limits, seconds=40.0)}
    assert all(c.passed for c in checks.values()), checks
    assert checks["goodput req/s"].measured == 1000 / 40.0
    slow = {c.name: c for c in evaluate(run, limits, seconds=200.0)}
    assert not slow["goodput req/s"].passed  # 5 req/s of work is not enough
    run[0] = Sample(names.TOURS_LIST, 900, 0, {80: 800, 2000: 100})
    assert not {c.name: c for c in evaluate(run, limits, 40.0)}["browse p95 ms"].passed


def test_other_profiles_keep_their_thresholds_without_goodput() -> None:
    assert thresholds_for("smoke").min_goodput_rps == 0
    checks = evaluate([flat(names.TOURS_LIST, 10, 5), flat(names.BOOKING_PAY, 1, 5)])
    assert "goodput req/s" not in {c.name for c in checks}


def test_run_seconds_reads_locusts_totals() -> None:
    stats = SimpleNamespace(total=SimpleNamespace(start_time=100.0, last_request_timestamp=130.5))
    assert run_seconds(stats) == 30.5
    assert run_seconds(SimpleNamespace()) == 0.0
