"""Pool eligibility: health, ejection and its cap, breaker, drain; what each outcome does."""

from __future__ import annotations

import json
import random

from lb.upstream.backend import Backend, Outcome
from lb.upstream.pool import Pool
from tests.lb.upstream.support import FakeClock, settings


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, object]] = []

    def ejected(self, backend: str, reason: str) -> None:
        self.log.append(("ejected", backend, reason))

    def breaker_changed(self, backend: str, state: str) -> None:
        self.log.append(("breaker", backend, state))

    def health_changed(self, backend: str, healthy: bool) -> None:
        self.log.append(("health", backend, healthy))


def make(n: int = 3, **env: str) -> tuple[Pool, FakeClock, Events]:
    clock, events = FakeClock(), Events()
    defaults = {
        "LB_OUTLIER_FAILURES": "3",
        "LB_OUTLIER_BASE_EJECTION": "5",
        "LB_HEALTH_RISE": "2",
        "LB_HEALTH_FALL": "2",
        "LB_BREAKER_MIN_REQUESTS": "1000",
    }
    pool = Pool.from_settings(
        settings(n, **{**defaults, **env}), clock=clock, rng=random.Random(3), events=events
    )
    pool.active_checks = True
    return pool, clock, events


def fail(pool: Pool, backend: Backend, outcome: Outcome, times: int) -> None:
    for _ in range(times):
        backend.outstanding += 1  # as if picked
        pool.in_flight += 1
        pool.finish(backend, outcome)


def picked_names(pool: Pool, count: int = 60) -> set[str]:
    names = set()
    for _ in range(count):
        backend = pool.pick()
        assert backend is not None
        names.add(backend.name)
        pool.finish(backend, Outcome.OK)
    return names


def test_pick_reserves_and_finish_releases() -> None:
    pool, _, _ = make()
    backend = pool.pick()
    assert backend is not None
    assert backend.outstanding == 1 and pool.in_flight == 1
    pool.finish(backend, Outcome.OK)
    assert backend.outstanding == 0 and pool.in_flight == 0
    assert backend.requests == 1 and backend.failures == 0


def test_consecutive_failures_eject_and_the_backend_gets_no_traffic() -> None:
    pool, _, events = make()
    bad = pool.backends[0]
    fail(pool, bad, Outcome.CONNECT_FAILURE, 3)
    assert bad.outlier.ejected
    assert ("ejected", bad.name, "connect_failure") in events.log
    assert bad.name not in picked_names(pool)


def test_an_ejected_backend_returns_only_through_a_passed_health_check() -> None:
    pool, clock, _ = make()
    bad = pool.backends[0]
    fail(pool, bad, Outcome.TIMEOUT, 3)
    pool.health_result(bad, True)  # still inside its ejection time
    assert bad.outlier.ejected
    clock.advance(5)
    assert bad.name not in picked_names(pool)  # time is up, but nothing vouched for it yet
    pool.health_result(bad, False)
    assert bad.outlier.ejected
    pool.health_result(bad, True)
    assert not bad.outlier.ejected
    assert bad.name in picked_names(pool)


def test_without_active_checks_an_ejected_backend_returns_when_its_time_is_up() -> None:
    pool, clock, _ = make()
    pool.active_checks = False
    bad = pool.backends[0]
    fail(pool, bad, Outcome.RESET, 3)
    clock.advance(4.9)
    assert bad.name not in picked_names(pool)
    clock.advance(0.1)
    assert bad.name in picked_names(pool)


def test_no_more_than_the_allowed_share_is_ejected() -> None:
    pool, _, _ = make(3, LB_OUTLIER_MAX_EJECTED="0.5")
    a, b, c = pool.backends
    fail(pool, a, Outcome.SERVER_ERROR, 3)
    fail(pool, b, Outcome.SERVER_ERROR, 3)
    fail(pool, c, Outcome.SERVER_ERROR, 3)
    assert [x.outlier.ejected for x in pool.backends] == [True, False, False]
    assert picked_names(pool) == {b.name, c.name}


def test_backpressure_never_ejects_nor_opens_the_breaker() -> None:
    pool, _, events = make(LB_BREAKER_MIN_REQUESTS="5")
    busy = pool.backends[0]
    fail(pool, busy, Outcome.BACKPRESSURE, 50)
    assert not busy.outlier.ejected
    assert busy.breaker.state.value == "closed"
    assert busy.failures == 0
    assert events.log == []


def test_backpressure_breaks_a_failure_streak() -> None:
    pool, _, _ = make()
    backend = pool.backends[0]
    fail(pool, backend, Outcome.RESET, 2)
    fail(pool, backend, Outcome.BACKPRESSURE, 1)
    fail(pool, backend, Outcome.RESET, 2)
    assert not backend.outlier.ejected


def test_cancelled_requests_count_for_nothing() -> None:
    pool, _, _ = make()
    backend = pool.backends[0]
    fail(pool, backend, Outcome.CANCELLED, 10)
    assert backend.requests == 0 and backend.failures == 0
    assert not backend.outlier.ejected
    assert pool.in_flight == 0


def test_health_hysteresis_takes_a_backend_out_and_back() -> None:
    pool, _, events = make()
    backend = pool.backends[1]
    pool.health_result(backend, False)
    assert backend.healthy  # one failed check is not enough (fall = 2)
    pool.health_result(backend, False)
    assert not backend.healthy
    assert backend.name not in picked_names(pool)
    pool.health_result(backend, True)
    assert not backend.healthy  # rise = 2
    pool.health_result(backend, True)
    assert backend.healthy
    assert events.log == [("health", backend.name, False), ("health", backend.name, True)]
    assert backend.name in picked_names(pool)


def test_no_eligible_backend_gives_none() -> None:
    pool, _, _ = make(2)
    for backend in pool.backends:
        pool.health_result(backend, False)
        pool.health_result(backend, False)
    assert pool.pick() is None
    assert pool.eligible_count() == 0
    assert pool.in_flight == 0


def test_drain_stops_new_requests_and_restore_undoes_it() -> None:
    pool, _, _ = make()
    target = pool.backends[2]
    held = [pool.pick() for _ in range(6)]
    assert target in held
    assert pool.drain(target.name)
    assert target.name not in picked_names(pool)
    for backend in held:  # in-flight requests still finish normally
        assert backend is not None
        pool.finish(backend, Outcome.OK)
    assert target.outstanding == 0
    assert pool.restore(target.name)
    assert target.name in picked_names(pool)
    assert not pool.drain("10.0.0.1:1") and not pool.restore("10.0.0.1:1")


def test_exclude_accepts_backends_and_names() -> None:
    pool, _, _ = make(2)
    a, b = pool.backends
    for _ in range(20):
        first = pool.pick(exclude=frozenset({a}))
        second = pool.pick(exclude=frozenset({b.name}))
        assert first is b and second is a
        pool.finish(first, Outcome.OK)
        pool.finish(second, Outcome.OK)


def test_breaker_opens_through_the_pool_and_admits_one_half_open_probe() -> None:
    pool, clock, events = make(
        1,
        LB_BREAKER_MIN_REQUESTS="10",
        LB_BREAKER_RATIO="0.5",
        LB_BREAKER_OPEN="5",
        LB_OUTLIER_FAILURES="1000",
    )
    (backend,) = pool.backends
    fail(pool, backend, Outcome.SERVER_ERROR, 10)
    assert backend.breaker.state.value == "open"
    assert pool.pick() is None
    clock.advance(5)
    picks = [pool.pick() for _ in range(50)]
    assert sum(p is not None for p in picks) == 1
    pool.finish(backend, Outcome.OK)
    assert backend.breaker.state.value == "closed"
    assert [e for e in events.log if e[0] == "breaker"] == [
        ("breaker", backend.name, "open"),
        ("breaker", backend.name, "half_open"),
        ("breaker", backend.name, "closed"),
    ]


def test_an_open_breaker_moves_traffic_to_the_other_backends() -> None:
    pool, _, _ = make(3, LB_BREAKER_MIN_REQUESTS="4", LB_OUTLIER_FAILURES="1000")
    bad = pool.backends[0]
    fail(pool, bad, Outcome.TIMEOUT, 4)
    assert bad.name not in picked_names(pool)


def test_snapshot_is_json_and_reports_state() -> None:
    pool, clock, _ = make()
    bad = pool.backends[0]
    fail(pool, bad, Outcome.RESET, 3)
    clock.advance(2)
    pool.drain(pool.backends[1].name)
    rows = json.loads(json.dumps(pool.snapshot()))
    assert [r["name"] for r in rows] == [b.name for b in pool.backends]
    first, second, third = rows
    assert first["ejected_until"] == 3.0 and first["ejections"] == 1
    assert first["failures"] == 3 and first["requests"] == 3
    assert first["healthy"] is True and first["eligible"] is False
    assert second["drained"] is True and second["ejected_until"] is None
    assert third["breaker"] == "closed" and third["eligible"] is True
    assert set(first) >= {
        "name",
        "healthy",
        "ejected_until",
        "ejections",
        "breaker",
        "outstanding",
        "drained",
        "requests",
        "failures",
    }
