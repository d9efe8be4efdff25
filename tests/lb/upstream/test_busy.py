"""Busy is not dead: a timed-out health check of a backend that keeps completing requests (pure)."""

from __future__ import annotations

import random

from lb.upstream.backend import Outcome
from lb.upstream.pool import Pool
from tests.lb.upstream.support import FakeClock, settings


def make() -> tuple[Pool, FakeClock]:
    clock = FakeClock()
    env = {"LB_HEALTH_INTERVAL": "2", "LB_HEALTH_TIMEOUT": "1", "LB_HEALTH_FALL": "2"}
    pool = Pool.from_settings(settings(2, **env), clock=clock, rng=random.Random(1))
    pool.active_checks = True
    return pool, clock


def complete(pool: Pool, outcome: Outcome = Outcome.OK) -> None:
    backend = pool.pick()
    assert backend is not None
    pool.finish(backend, outcome)


def test_timed_out_checks_of_a_backend_completing_requests_count_for_nothing() -> None:
    pool, clock = make()
    backend = pool.backends[0]
    for _ in range(10):  # 20 s of checks timing out, answers arriving all along
        for _ in range(20):
            if (b := pool.pick()) is not None:
                pool.finish(b, Outcome.OK)
        clock.advance(2)
        pool.health_result(backend, False, timed_out=True)
    assert backend.healthy


def test_a_backend_that_completes_nothing_falls_as_fast_as_before() -> None:
    pool, clock = make()
    backend = pool.backends[0]
    complete(pool)
    clock.advance(3.01)  # past interval + timeout since its last answer
    pool.health_result(backend, False, timed_out=True)
    clock.advance(2)
    pool.health_result(backend, False, timed_out=True)
    assert not backend.healthy


def test_failures_and_refusals_are_never_excused() -> None:
    pool, _ = make()
    backend = pool.backends[0]
    backend.last_success = pool._clock()  # it just answered
    pool.health_result(backend, False)  # refused, or a 5xx: not a timeout
    pool.health_result(backend, False)
    assert not backend.healthy


def test_only_completed_attempts_prove_life() -> None:
    pool, _clock = make()
    backend = pool.backends[0]
    for outcome in (Outcome.TIMEOUT, Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.CANCELLED):
        backend.outstanding += 1
        pool.in_flight += 1
        pool.finish(backend, outcome)
    assert backend.last_success is None
    pool.health_result(backend, False, timed_out=True)
    pool.health_result(backend, False, timed_out=True)
    assert not backend.healthy
