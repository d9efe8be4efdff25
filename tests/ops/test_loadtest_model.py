"""The Black-Friday shape, the profiles and the pass/fail thresholds (pure, no load)."""

from __future__ import annotations

import pytest

from loadtest import names
from loadtest.profiles import PEAK, PROFILES, SMOKE, ProfileError, load_profile
from loadtest.shape import stages, target_at
from loadtest.thresholds import DEFAULT_THRESHOLDS, Sample, evaluate


def users_over_time(profile, step=1.0):
    plan = stages(profile)
    t, seen = 0.0, []
    while (stage := target_at(plan, t)) is not None:
        seen.append((t, stage))
        t += step
    return seen


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_shape_is_baseline_buildup_spike_hold_decay_then_stops(profile):
    seen = users_over_time(profile)
    order = []
    for _, stage in seen:
        if not order or order[-1] != stage.name:
            order.append(stage.name)
    assert order == ["baseline", "build-up", "spike", "hold", "decay"]
    peak = max(stage.users for _, stage in seen)
    assert peak == profile.peak_users
    # the run ends by itself, on time
    assert target_at(stages(profile), profile.duration) is None
    assert seen[-1][0] < profile.duration


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_spike_reaches_peak_within_60_seconds(profile):
    spike = next(s for s in stages(profile) if s.name == "spike")
    climb = profile.peak_users - profile.buildup_users
    assert profile.spike_seconds <= 60
    # at its spawn rate the spike reaches the peak inside its own phase
    assert climb / spike.spawn_rate <= profile.spike_seconds


def test_peak150_is_one_and_a_half_times_peak():
    p150 = load_profile({"LOADTEST_PROFILE": "peak150"})
    assert p150.peak_users == round(PEAK.peak_users * 1.5)
    assert p150.duration == PEAK.duration


def test_profile_selection_and_bad_name():
    assert load_profile({}) is PEAK
    assert load_profile({"LOADTEST_PROFILE": "smoke"}) is SMOKE
    with pytest.raises(ProfileError, match=r"LOADTEST_PROFILE='huge'.*smoke, peak, peak150"):
        load_profile({"LOADTEST_PROFILE": "huge"})


def test_smoke_fits_a_ci_job():
    assert SMOKE.duration <= 45 and SMOKE.peak_users <= 30


def flat(name, requests, ms, failures=0):
    return Sample(name, requests, failures, {ms: requests})


def verdicts(samples, limits=DEFAULT_THRESHOLDS):
    return {check.name: check.passed for check in evaluate(samples, limits)}


def test_thresholds_pass_on_a_fast_clean_run():
    run = [flat(names.TOURS_LIST, 1000, 40), flat(names.BOOKING_CREATE, 200, 120)]
    assert all(verdicts(run).values())


def test_slow_browse_p95_fails():
    # 6% of browse requests at 900 ms: p95 is 900 ms > 200 ms
    run = [
        Sample(names.TOURS_LIST, 1000, 0, {50: 940, 900: 60}),
        flat(names.BOOKING_CREATE, 10, 100),
    ]
    assert verdicts(run)["browse p95 ms"] is False
    assert verdicts(run)["booking p95 ms"] is True


def test_slow_booking_p95_fails():
    run = [flat(names.TOURS_LIST, 100, 10), flat(names.BOOKING_PAY, 100, 800)]
    assert verdicts(run)["booking p95 ms"] is False


def test_failures_above_one_percent_fail_but_expected_outcomes_do_not_count():
    run = [
        flat(names.TOURS_LIST, 1000, 10, failures=5),
        flat(names.BOOKING_CREATE, 100, 100, failures=6),
        # thousands of sold-out answers and 429s, slow ones too: expected, not failures
        flat(names.expected(names.BOOKING_CREATE, "sold_out"), 5000, 2000),
        flat(names.expected(names.TOURS_LIST, "429"), 5000, 2000),
    ]
    checks = {c.name: c for c in evaluate(run)}
    assert checks["failure ratio"].measured == pytest.approx(11 / 1100)
    assert checks["failure ratio"].passed is True  # exactly 1%
    assert checks["browse p95 ms"].passed and checks["booking p95 ms"].passed
    run[0] = flat(names.TOURS_LIST, 1000, 10, failures=6)
    assert verdicts(run)["failure ratio"] is False


def test_a_run_without_traffic_fails():
    assert verdicts([])["browse requests"] is False
    assert verdicts([flat(names.TOURS_LIST, 10, 5)])["booking requests"] is False
