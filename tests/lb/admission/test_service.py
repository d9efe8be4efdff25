"""Admission as the proxy uses it, on in-process buckets and a fake clock (pure, no sleeps)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from lb.admission.limiter import LocalLimiter
from lb.admission.service import Admission, build_admission
from lb.config import admission_options, load_settings
from tests.support.clock import FakeClock


def make(env: dict[str, str], clock: FakeClock) -> tuple[Admission, CollectorRegistry]:
    registry = CollectorRegistry()
    return build_admission(admission_options(load_settings(env)), registry, clock=clock), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


BASE = {"BUCKET_CAPACITY": "5", "LEAK_RATE": "1"}


async def test_burst_of_twenty_admits_five_then_recovers() -> None:
    clock = FakeClock()
    admission, registry = make(BASE, clock)
    await admission.start()
    verdicts = [await admission.check("GET", "/api/tours/", "10.0.0.1") for _ in range(20)]
    assert sum(v.allowed for v in verdicts) == 5
    rejected = [v for v in verdicts if not v.allowed]
    assert all(v.status == 429 and v.code == "rate_limited" for v in rejected)
    assert all(dict(v.headers)["Retry-After"] == "1" for v in rejected)
    assert all("retry in 1 second" in v.detail for v in rejected)
    clock.advance(1)
    assert (await admission.check("GET", "/api/tours/", "10.0.0.1")).allowed
    clock.advance(5)
    again = [await admission.check("GET", "/api/tours/", "10.0.0.1") for _ in range(20)]
    assert sum(v.allowed for v in again) == 5
    assert sample(registry, "lb_admission_admitted_total", rule="default") == 11
    assert sample(registry, "lb_admission_rejected_total", rule="default", dry_run="0") == 30
    await admission.close()


async def test_ratelimit_headers_on_admitted_and_rejected() -> None:
    clock = FakeClock()
    admission, _ = make(BASE, clock)
    first = await admission.check("GET", "/", "c")
    assert first.headers == (
        ("RateLimit-Policy", '"default";q=5;w=5'),
        ("RateLimit", '"default";r=4;t=1'),
    )
    for _ in range(4):
        last = await admission.check("GET", "/", "c")
    # t: seconds until the bucket has drained empty (5 units at 1/s)
    assert dict(last.headers)["RateLimit"] == '"default";r=0;t=5'
    rejected = await admission.check("GET", "/", "c")
    assert rejected.headers == (
        ("RateLimit-Policy", '"default";q=5;w=5'),
        ("RateLimit", '"default";r=0;t=5'),
        ("Retry-After", "1"),
    )


async def test_register_rule_applies_while_tours_use_the_default_bucket() -> None:
    clock = FakeClock()
    admission, registry = make({"BUCKET_CAPACITY": "20", "LEAK_RATE": "10"}, clock)
    register = [await admission.check("POST", "/api/auth/register/", "c") for _ in range(5)]
    assert [v.allowed for v in register] == [True, True, False, False, False]
    assert dict(register[0].headers)["RateLimit-Policy"] == '"POST /api/auth/register/";q=2;w=2'
    tours = [await admission.check("GET", "/api/tours/", "c") for _ in range(19)]
    assert all(v.allowed for v in tours)  # a separate, bigger bucket
    assert dict(tours[0].headers)["RateLimit-Policy"] == '"default";q=20;w=2'
    # GET on the register path is not the POST rule
    assert (await admission.check("GET", "/api/auth/register/", "c")).allowed
    clock.advance(1)
    assert (await admission.check("POST", "/api/auth/register/", "c")).allowed
    assert not (await admission.check("POST", "/api/auth/register/", "c")).allowed
    assert (
        sample(
            registry, "lb_admission_rejected_total", rule="POST /api/auth/register/", dry_run="0"
        )
        == 4
    )


async def test_clients_have_separate_buckets() -> None:
    clock = FakeClock()
    admission, _ = make(BASE, clock)
    for client in ("10.0.0.1", "10.0.0.2", "2001:db8::/64"):
        assert sum([(await admission.check("GET", "/", client)).allowed for _ in range(9)]) == 5


async def test_dry_run_rejects_nothing_but_counts_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    admission, registry = make({**BASE, "LB_RATE_DRY_RUN": "1"}, clock)
    with caplog.at_level(logging.INFO, logger="lb.admission"):
        verdicts = [await admission.check("GET", "/x", "10.9.9.9") for _ in range(20)]
    assert all(v.allowed for v in verdicts)
    assert all("Retry-After" not in dict(v.headers) for v in verdicts)
    assert dict(verdicts[-1].headers)["RateLimit"] == '"default";r=0;t=5'
    assert sample(registry, "lb_admission_rejected_total", rule="default", dry_run="1") == 15
    assert sample(registry, "lb_admission_rejected_total", rule="default", dry_run="0") == 0
    lines = [r.getMessage() for r in caplog.records if "would reject" in r.getMessage()]
    assert lines and "10.9.9.9" in lines[0]
    assert len(lines) <= 10  # throttled: a flood cannot flood the log
    assert admission.top_rejected(1) == [("10.9.9.9", 15)]
    assert admission.status()["dry_run"] is True


async def test_top_rejected_lists_the_heaviest_clients() -> None:
    clock = FakeClock()
    admission, _ = make({"BUCKET_CAPACITY": "1", "LEAK_RATE": "1"}, clock)
    for client, n in (("a", 10), ("b", 4), ("c", 7)):
        for _ in range(n):
            await admission.check("GET", "/", client)
    assert admission.top_rejected(2) == [("a", 9), ("c", 6)]


async def test_status_describes_mode_and_rules() -> None:
    admission, registry = make(BASE, FakeClock())
    await admission.start()
    status = admission.status()
    assert status["mode"] == "local" and status["store"] == "memory"
    assert {r["name"]: (r["capacity"], r["rate"]) for r in status["rules"]} == {
        "default": (5, 1.0),
        "POST /api/auth/register/": (2, 1.0),
        "POST /api/auth/token/": (5, 0.5),
        "GET /static/": (200, 100.0),
    }
    assert sample(registry, "lb_admission_mode", mode="local") == 1
    assert sample(registry, "lb_admission_mode", mode="redis") == 0


def test_local_limiter_forgets_drained_buckets() -> None:
    clock = FakeClock()
    limiter = LocalLimiter(clock, sweep_every=10)
    admission, _ = make(BASE, clock)
    rule = admission.rules.default
    for i in range(100):
        limiter.check_now(rule, f"10.0.{i}.1")
    assert len(limiter) == 100
    clock.advance(11)  # 1 unit at 1/s drained long ago; next check sweeps
    limiter.check_now(rule, "10.1.1.1")
    assert len(limiter) == 1
