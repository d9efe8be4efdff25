"""The admission policy: validation as the environment's, versions, live swaps (pure)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from lb.admission.distribution import PolicyCopy, reset_document, resolve
from lb.admission.heavy_hitters import ArrivalLog
from lb.admission.options import AdmissionOptions
from lb.admission.policy import Policy, PolicyError, updated
from lb.admission.rules import parse_rules
from lb.admission.service import build_admission
from lb.config import admission_options, load_settings
from tests.support.clock import FakeClock

BOOT = Policy(20, 10.0, parse_rules("POST /api/auth/register/=2/1"))


def test_an_update_keeps_what_it_leaves_out_and_validates_what_it_gives() -> None:
    policy = updated(BOOT, {"bucket_capacity": 40, "leak_rate": "2.5", "dry_run": True})
    assert (policy.bucket_capacity, policy.leak_rate, policy.dry_run) == (40, 2.5, True)
    assert policy.rules == BOOT.rules
    assert updated(BOOT, {"rules": ""}).rules == ()
    assert updated(BOOT, {"dry_run": "0"}).dry_run is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"bucket_capacity": 0}, "bucket_capacity"),
        ({"bucket_capacity": 2.5}, "bucket_capacity"),
        ({"bucket_capacity": True}, "bucket_capacity"),
        ({"leak_rate": 0}, "leak_rate"),
        ({"leak_rate": "inf"}, "leak_rate"),
        ({"leak_rate": None}, "leak_rate"),
        ({"rules": "POST /x=2"}, "rules"),
        ({"rules": "POST /x=2/1; POST /x=3/1"}, "rules"),
        ({"rules": 5}, "rules"),
        ({"dry_run": "perhaps"}, "dry_run"),
        ({"capacity": 5}, "capacity"),
    ],
)
def test_a_bad_field_is_named(body: dict[str, object], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        updated(BOOT, body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_the_same_rules_are_refused_here_as_in_the_environment() -> None:
    for text in ("GET x=1/1", "FETCH /x=1/1", 'GET /"x=1/1', "GET /x=0/1"):
        with pytest.raises(PolicyError):
            updated(BOOT, {"rules": text})
        with pytest.raises(Exception, match="LB_RATE_RULES"):
            load_settings({"LB_RATE_RULES": text})


def test_stored_form_round_trips_and_a_reset_means_each_process_environment() -> None:
    policy = updated(BOOT, {"bucket_capacity": 7})
    stored = {**policy.to_json(), "version": 4, "set_by": "alice@10.0.0.1", "set_at": 1.5}
    again = Policy.from_json(stored)
    assert (again.version, again.bucket_capacity, again.rules, again.set_by) == (
        4,
        7,
        BOOT.rules,
        "alice@10.0.0.1",
    )
    with pytest.raises(PolicyError):
        Policy.from_json({**stored, "leak_rate": -1})
    reset = resolve({**reset_document("bob"), "version": 5}, BOOT)
    assert (reset.version, reset.bucket_capacity, reset.rules) == (5, 20, BOOT.rules)
    copy = PolicyCopy(BOOT)
    assert copy.apply(again) and not copy.apply(again) and copy.apply(reset)
    assert not copy.apply(again)  # older than what is in force


async def test_apply_swaps_the_policy_between_requests_and_keeps_the_levels() -> None:
    clock = FakeClock()
    options = admission_options(load_settings({"BUCKET_CAPACITY": "5", "LEAK_RATE": "1"}))
    registry = CollectorRegistry()
    admission = build_admission(options, registry, clock=clock)
    assert sum([(await admission.check("GET", "/", "c")).allowed for _ in range(5)]) == 5
    assert not (await admission.check("GET", "/", "c")).allowed
    wider = updated(admission.policy, {"bucket_capacity": 8, "rules": "GET /s/=1/1"})
    assert admission.apply(Policy(**{**_fields(wider), "version": 1}))
    verdicts = [await admission.check("GET", "/", "c") for _ in range(5)]
    # the level (5) stayed: three more fit in a bucket of 8
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert dict(verdicts[0].headers)["RateLimit-Policy"] == '"default";q=8;w=8'
    assert (await admission.check("GET", "/s/1", "c")).allowed
    assert not (await admission.check("GET", "/s/2", "c")).allowed
    assert registry.get_sample_value("lb_admission_policy_version") == 1
    assert registry.get_sample_value("lb_admission_policy_changes_total") == 1
    assert (
        registry.get_sample_value(
            "lb_admission_rejected_total", {"rule": "GET /s/", "dry_run": "0"}
        )
        == 1
    )
    # an older or equal version changes nothing
    assert not admission.apply(BOOT)
    assert admission.status()["policy_version"] == 1


def _fields(policy: Policy) -> dict[str, object]:
    return {name: getattr(policy, name) for name in Policy.__dataclass_fields__}


def test_the_boot_policy_is_the_environment() -> None:
    options = AdmissionOptions(bucket_capacity=3, leak_rate=0.5, dry_run=True)
    boot = options.boot_policy()
    assert (boot.version, boot.set_by, boot.bucket_capacity, boot.dry_run) == (
        0,
        "environment",
        3,
        True,
    )


def test_the_arrival_log_is_bounded_and_forgets_the_least_recent_client() -> None:
    clock = FakeClock(1000.0)
    log = ArrivalLog(clock, window=60, clients=3, per_client=4)
    for i in range(10):
        clock.now = 1000.0 + i * 0.05
        log.add("a", "GET", "/x")  # one record: same second, same route
    assert log.since(60)["a"] == [(1000, "GET", "/x", 10, 1000.0, 1000.45)]
    for second in range(10):
        clock.now = 1001.0 + second
        log.add("a", "GET", "/" + "p" * 500)
    assert len(log.since(60)["a"]) == 4  # oldest records dropped
    assert all(len(path) == ArrivalLog.PATH_LIMIT for _, _, path, *_ in log.since(60)["a"])
    for client in ("b", "c", "d"):
        log.add(client, "GET", "/")
    assert len(log) == 3 and "a" not in log.since(60)
    clock.now += 120
    assert log.since(60) == {}


def test_no_admission_module_reads_the_lb_settings() -> None:
    """Admission takes AdmissionOptions; only lb/config.py knows the environment."""
    from pathlib import Path

    import lb.admission

    package = Path(lb.admission.__file__).parent
    offenders = [
        path.name
        for path in sorted(package.glob("*.py"))
        if "lb.config" in path.read_text() or "from lb import config" in path.read_text()
    ]
    assert offenders == []
