"""One suite, every bucket store: in-process, Redis, and a 3-node Redis Cluster.

These run on the real clock (Redis uses its own), so waits are short and bounds tolerant.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from lb.admission.bucket import Decision
from lb.admission.limiter import LocalLimiter
from lb.admission.redis_limiter import RedisLimiter
from lb.admission.rules import Rule

Store = LocalLimiter | RedisLimiter


def client() -> str:
    """A fresh client key, so tests sharing a Redis server never share a bucket."""
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().hex[:6]}"


async def burst(store: Store, rule: Rule, key: str, n: int) -> list[Decision]:
    results = await asyncio.gather(*(store.check(rule, key) for _ in range(n)))
    return [r for r in results if r is not None]


async def test_burst_admits_exactly_capacity_then_recovers(store: Store) -> None:
    rule, key = Rule("default", 5, 1.0), client()
    decisions = await burst(store, rule, key, 20)
    assert sum(d.allowed for d in decisions) == 5
    assert all(d.retry_after == 1 for d in decisions if not d.allowed)
    # full: 5 units at 1/s, so the whole quota is back in 5 s (draft-11 `t`)
    assert all(d.remaining == 0 and d.reset == 5 for d in decisions if not d.allowed)
    await asyncio.sleep(1.05)  # Retry-After seconds later
    assert (await store.check(rule, key)).allowed
    assert not (await store.check(rule, key)).allowed


async def test_drained_bucket_gives_the_full_burst_again(store: Store) -> None:
    rule, key = Rule("default", 4, 20.0), client()
    assert sum(d.allowed for d in await burst(store, rule, key, 12)) == 4
    await asyncio.sleep(0.3)  # 4 units at 20/s drain in 0.2 s
    assert sum(d.allowed for d in await burst(store, rule, key, 12)) == 4


async def test_rejected_requests_change_nothing(store: Store) -> None:
    rule, key = Rule("default", 2, 4.0), client()
    assert sum(d.allowed for d in await burst(store, rule, key, 2)) == 2
    started = time.monotonic()
    for _ in range(10):
        assert not (await store.check(rule, key)).allowed
    # a reject that raised the level or reset the clock would delay this past 0.25 s
    await asyncio.sleep(max(0.0, 0.3 - (time.monotonic() - started)))
    assert (await store.check(rule, key)).allowed


async def test_remaining_counts_down(store: Store) -> None:
    rule, key = Rule("default", 5, 0.01), client()
    remaining = [(await store.check(rule, key)).remaining for _ in range(6)]
    assert remaining == [4, 3, 2, 1, 0, 0]
    rejected = await store.check(rule, key)
    assert not rejected.allowed and rejected.retry_after == 100  # one unit at 0.01/s


async def test_clients_and_rules_have_separate_buckets(store: Store) -> None:
    default, register = Rule("default", 3, 0.5), Rule("POST /api/auth/register/", 2, 0.5)
    a, b = client(), client()
    results = await asyncio.gather(
        burst(store, default, a, 6),
        burst(store, default, b, 6),
        burst(store, register, a, 6),
    )
    assert [sum(d.allowed for d in r) for r in results] == [3, 3, 2]


async def test_many_concurrent_clients_each_get_exactly_their_capacity(store: Store) -> None:
    rule = Rule("default", 5, 0.5)
    keys = [client() for _ in range(40)]
    checks = [store.check(rule, key) for _ in range(12) for key in keys]
    results = await asyncio.gather(*checks)
    admitted: dict[str, int] = dict.fromkeys(keys, 0)
    for i, decision in enumerate(results):
        admitted[keys[i % len(keys)]] += decision.allowed
    assert set(admitted.values()) == {5}


async def test_ipv6_prefix_keys_work(store: Store) -> None:
    rule = Rule("default", 1, 0.5)
    key = f"2001:db8:{uuid.uuid4().int % 65535:x}::/64"
    assert [d.allowed for d in await burst(store, rule, key, 3)].count(True) == 1


async def test_a_big_burst_is_exact_across_batches(store: Store) -> None:
    # more checks than one script call takes: the order and the count still hold
    rule, key = Rule("default", 300, 0.5), client()
    decisions = await burst(store, rule, key, 700)
    assert [d.allowed for d in decisions] == [True] * 300 + [False] * 400
    assert [d.remaining for d in decisions[:3]] == [299, 298, 297]
