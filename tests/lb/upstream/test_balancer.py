"""Balancing: p2c least outstanding and round robin, with a seeded rng."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lb.upstream.backend import Outcome
from lb.upstream.pool import Pool
from tests.lb.upstream.support import FakeClock, settings


def make_pool(algorithm: str, n: int = 3, seed: int = 1) -> Pool:
    return Pool.from_settings(
        settings(n, LB_ALGORITHM=algorithm), clock=FakeClock(), rng=random.Random(seed)
    )


@pytest.mark.parametrize("algorithm", ["p2c", "round_robin"])
def test_sequential_requests_get_even_shares(algorithm: str) -> None:
    pool = make_pool(algorithm)
    shares: Counter[str] = Counter()
    for _ in range(3000):
        backend = pool.pick()
        assert backend is not None
        shares[backend.name] += 1
        pool.finish(backend, Outcome.OK)
    assert len(shares) == 3
    for count in shares.values():
        assert 850 <= count <= 1150, shares


def test_p2c_sends_new_requests_to_the_least_loaded() -> None:
    pool = make_pool("p2c", n=4)
    held = [pool.pick() for _ in range(400)]  # none finishes: outstanding piles up
    assert all(b is not None for b in held)
    loads = [b.outstanding for b in pool.backends]
    assert sum(loads) == 400
    assert max(loads) - min(loads) <= 2, loads


def test_p2c_avoids_a_slow_backend() -> None:
    pool = make_pool("p2c")
    slow = pool.backends[0]
    slow.outstanding = 50  # stuck requests on a slow replica
    picks: Counter[str] = Counter()
    for _ in range(300):
        backend = pool.pick()
        assert backend is not None
        picks[backend.name] += 1
        pool.finish(backend, Outcome.OK)
    assert picks[slow.name] == 0


def test_p2c_with_the_same_seed_repeats_its_choices() -> None:
    def run(seed: int) -> list[str]:
        pool = make_pool("p2c", n=5, seed=seed)
        names = []
        for i in range(50):
            backend = pool.pick()
            assert backend is not None
            names.append(backend.name)
            if i % 3:
                pool.finish(backend, Outcome.OK)
        return names

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_round_robin_keeps_its_order_and_skips_excluded() -> None:
    pool = make_pool("round_robin")
    a, b, c = pool.backends
    order = []
    for _ in range(6):
        backend = pool.pick()
        assert backend is not None
        order.append(backend)
        pool.finish(backend, Outcome.OK)
    assert order == [a, b, c, a, b, c]
    nxt = pool.pick(exclude=frozenset({a}))
    assert nxt is b
    pool.finish(nxt, Outcome.OK)
    assert pool.pick() is c


@pytest.mark.parametrize("algorithm", ["p2c", "round_robin"])
def test_excluding_every_backend_leaves_none(algorithm: str) -> None:
    pool = make_pool(algorithm)
    assert pool.pick(exclude={b.name for b in pool.backends}) is None
    assert pool.in_flight == 0


def test_single_backend_pool_always_picks_it() -> None:
    pool = make_pool("p2c", n=1)
    backend = pool.pick()
    assert backend is pool.backends[0]
