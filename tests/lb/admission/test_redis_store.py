"""What only the Redis store must show: one key per bucket, expiry, NOSCRIPT, shared limits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from lb.admission.redis_limiter import RedisLimiter, StoreUnavailable, bucket_key, redact
from lb.admission.redis_transport import SHA
from lb.admission.rules import Rule
from ops.servers import RedisServer
from tests.lb.admission.conftest import redis_limiter

pytestmark = pytest.mark.redis


def test_bucket_key_is_one_hash_tag_per_rule_and_client() -> None:
    key = bucket_key("POST /api/{x}/", "10.0.0.1")
    assert key == "lb:rl:{POST /api/x/|10.0.0.1}"
    assert bucket_key("default", "10.0.0.1") != bucket_key("default", "10.0.0.2")


def test_redact_hides_the_password() -> None:
    assert redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact("redis://app:s3cret@redis:6379/0") == "redis://app:***@redis:6379/0"
    assert redact("redis://redis:6379/0") == "redis://redis:6379/0"


@pytest.fixture
async def limiter(redis_server: RedisServer) -> RedisLimiter:
    lim = redis_limiter(redis_server.url)
    await lim.start()
    yield lim  # type: ignore[misc]
    await lim.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis.from_url(redis_server.url)
    yield client  # type: ignore[misc]
    await client.aclose()


async def test_state_is_one_key_expiring_when_the_bucket_is_empty(
    limiter: RedisLimiter, raw: redis.Redis
) -> None:
    rule, client = Rule("default", 5, 1.0), f"10.1.{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        assert (await limiter.check(rule, client)).allowed
    key = bucket_key(rule.name, client)
    assert await raw.keys(f"*{client}*") == [key.encode()]
    # three units at 1/s: the key lives as long as the bucket takes to drain
    assert 2500 <= await raw.pttl(key) <= 3000  # (less what leaked on a slow machine)


async def test_a_rejected_check_writes_nothing(limiter: RedisLimiter, raw: redis.Redis) -> None:
    rule, client = Rule("default", 2, 0.1), f"10.2.{uuid.uuid4().hex[:6]}"
    await asyncio.gather(*(limiter.check(rule, client) for _ in range(2)))
    key = bucket_key(rule.name, client)
    before = await raw.get(key)
    ttl_before = await raw.pttl(key)
    assert not (await limiter.check(rule, client)).allowed
    assert await raw.get(key) == before
    assert await raw.pttl(key) <= ttl_before


async def test_recovers_when_redis_forgets_the_script(fresh_redis: RedisServer) -> None:
    # a server of its own: flushing the shared one's scripts would disturb other tests
    limiter = redis_limiter(fresh_redis.url)
    await limiter.start()
    raw = redis.Redis.from_url(fresh_redis.url)
    rule, client = Rule("default", 3, 0.5), "10.3.0.1"
    assert (await limiter.check(rule, client)).allowed
    await raw.script_flush()  # what a restart or a failover does to the script cache
    results = await asyncio.gather(*(limiter.check(rule, client) for _ in range(5)))
    assert sum(r.allowed for r in results) == 2  # the same bucket, exact, no error
    await raw.aclose()
    await limiter.close()


async def test_two_limiters_on_one_redis_share_one_bucket(redis_server: RedisServer) -> None:
    # two lb processes (or hosts): separate clients, connections and batches
    first, second = redis_limiter(redis_server.url), redis_limiter(redis_server.url)
    await first.start()
    await second.start()
    rule, client = Rule("default", 5, 1.0), f"10.4.{uuid.uuid4().hex[:6]}"
    checks = [lim.check(rule, client) for _ in range(10) for lim in (first, second)]
    results = await asyncio.gather(*checks)
    assert sum(r.allowed for r in results) == 5
    await first.close()
    await second.close()


async def test_batches_go_in_one_round_trip(limiter: RedisLimiter) -> None:
    # 200 checks issued in one loop iteration become one pipeline, not 200 round trips
    rule = Rule("default", 1000, 1.0)
    sent: list[int] = []
    backend = limiter._backend
    original = backend.run

    async def counting(batch):  # type: ignore[no-untyped-def]
        sent.append(len(batch))
        return await original(batch)

    backend.run = counting  # type: ignore[method-assign]
    await asyncio.gather(*(limiter.check(rule, f"10.5.0.{i}") for i in range(200)))
    assert sent == [200]


async def test_password_and_database_in_the_url_are_honoured(fresh_redis: RedisServer) -> None:
    admin = redis.Redis.from_url(fresh_redis.url)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    url = f"redis://:s3cret@127.0.0.1:{fresh_redis.port}/3"
    limiter = redis_limiter(url)
    await limiter.start()
    rule = Rule("default", 2, 0.5)
    results = await asyncio.gather(*(limiter.check(rule, "10.6.0.1") for _ in range(4)))
    assert sum(r.allowed for r in results) == 2
    await limiter.close()
    check = redis.Redis.from_url(url)
    assert await check.exists(bucket_key("default", "10.6.0.1")) == 1  # in database 3
    await check.aclose()
    wrong = redis_limiter(f"redis://:nope@127.0.0.1:{fresh_redis.port}/3")
    with pytest.raises(StoreUnavailable):
        await wrong.start()
    await wrong.close()


@pytest.mark.slow
async def test_cluster_loads_the_script_on_every_primary_and_spreads_buckets(
    redis_cluster: list[RedisServer],
) -> None:
    limiter = redis_limiter(redis_cluster[0].url, cluster=True)
    await limiter.start()
    rule = Rule("default", 1, 0.01)  # the keys live 100 s: long enough to be looked at
    await asyncio.gather(*(limiter.check(rule, f"10.7.0.{i}") for i in range(60)))
    await limiter.close()
    holders = 0
    for node in redis_cluster:
        client = redis.Redis.from_url(node.url)
        assert await client.script_exists(SHA) == [True]
        holders += bool(await client.keys("lb:rl:*10.7.0.*"))
        await client.aclose()
    assert holders == 3  # different clients land on different nodes


async def test_a_refused_command_fails_only_its_own_check(
    limiter: RedisLimiter, raw: redis.Redis
) -> None:
    rule = Rule("default", 3, 0.5)
    await raw.hset(bucket_key(rule.name, "10.8.0.1"), "x", "1")  # a key of the wrong type
    bad, good = await asyncio.gather(
        limiter.check(rule, "10.8.0.1"), limiter.check(rule, "10.8.0.2"), return_exceptions=True
    )
    assert isinstance(bad, StoreUnavailable) and "WRONGTYPE" in str(bad)
    assert not isinstance(good, BaseException) and good.allowed
