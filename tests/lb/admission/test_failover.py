"""Redis trouble: detected in tens of milliseconds, handled by LB_REDIS_FAILURE, never a 500."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lb.admission.service import Admission, build_admission
from lb.config import admission_options, load_settings
from ops.servers import RedisServer

pytestmark = pytest.mark.redis


async def wait_for(predicate: Callable[[], bool], within: float) -> float:
    """Poll until `predicate()` holds; return the seconds it took (at most `within`)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
async def admission_for() -> AsyncIterator[Callable[..., object]]:
    made: list[Admission] = []

    async def make(
        url: str, policy: str = "local", *, cluster: bool = False
    ) -> tuple[Admission, CollectorRegistry]:
        env = {
            "REDIS_URL": url,
            "LB_REDIS_CLUSTER": "1" if cluster else "0",
            "LB_REDIS_FAILURE": policy,
            "BUCKET_CAPACITY": "5",
            "LEAK_RATE": "1",
            "LB_REDIS_TIMEOUT": "0.05",
        }
        registry = CollectorRegistry()
        admission = build_admission(admission_options(load_settings(env)), registry)
        await admission.start()
        made.append(admission)
        return admission, registry

    yield make
    for admission in made:
        await admission.close()


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def burst(admission: Admission, client: str, n: int = 20) -> int:
    verdicts = await asyncio.gather(*(admission.check("GET", "/x", client) for _ in range(n)))
    return sum(v.allowed for v in verdicts)


async def test_redis_killed_local_limits_apply_then_shared_limits_resume(
    fresh_redis: RedisServer,
    admission_for: Callable[..., object],
    work_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lb.admission")
    admission, registry = await admission_for(fresh_redis.url)  # type: ignore[misc]
    assert admission.status()["mode"] == "redis"
    assert await burst(admission, "10.0.0.1") == 5

    # under load: a stream of checks keeps going while Redis dies
    async def load() -> list[int]:
        statuses = []
        for i in range(300):
            verdict = await admission.check("GET", "/x", f"10.1.{i % 50}.1")
            statuses.append(verdict.status)
            await asyncio.sleep(0.002)
        return statuses

    running = asyncio.create_task(load())
    await asyncio.sleep(0.1)
    fresh_redis.kill()
    killed_at = time.monotonic()
    await wait_for(lambda: admission.status()["mode"] == "local", within=2)
    detected = time.monotonic() - killed_at
    statuses = await running
    assert set(statuses) <= {200, 429}  # never an error status
    assert detected < 1.0  # in practice one failed batch: milliseconds
    assert metric(registry, "lb_admission_mode", mode="local") == 1
    assert metric(registry, "lb_admission_redis_errors_total") >= 1
    # local buckets enforce the same limit meanwhile
    assert await burst(admission, "10.0.0.2") == 5

    restarted = RedisServer(work_dir / "redis-restarted", port=fresh_redis.port).start()
    try:
        took = await wait_for(lambda: admission.status()["mode"] == "redis", within=5)
        assert took < 3
        assert metric(registry, "lb_admission_mode", mode="redis") == 1
        # shared again: a second instance sees the same bucket
        other, _ = await admission_for(restarted.url)  # type: ignore[misc]
        first = await burst(admission, "10.0.0.3", 3)
        second = await burst(other, "10.0.0.3", 10)
        assert (first, second) == (3, 2)
        messages = [r.getMessage() for r in caplog.records]
        assert any("Redis unavailable" in m and "LB_REDIS_FAILURE=local" in m for m in messages)
        assert any("Redis is back" in m for m in messages)
    finally:
        restarted.stop()


async def test_hung_redis_is_detected_within_tens_of_milliseconds(
    fresh_redis: RedisServer, admission_for: Callable[..., object]
) -> None:
    admission, _ = await admission_for(fresh_redis.url)  # type: ignore[misc]
    assert (await admission.check("GET", "/x", "10.0.0.1")).allowed
    assert fresh_redis.proc is not None
    os.kill(fresh_redis.proc.pid, signal.SIGSTOP)  # alive but silent: the worst case
    try:
        started = time.monotonic()
        verdict = await admission.check("GET", "/x", "10.0.0.1")
        took = time.monotonic() - started
        assert verdict.allowed and admission.status()["mode"] == "local"
        assert took < 0.3  # LB_REDIS_TIMEOUT=0.05, plus a loaded machine's slack
        # further checks do not wait on Redis at all
        started = time.monotonic()
        assert await burst(admission, "10.0.0.9") == 5
        assert time.monotonic() - started < 0.1
    finally:
        os.kill(fresh_redis.proc.pid, signal.SIGCONT)
    await wait_for(lambda: admission.status()["mode"] == "redis", within=5)


async def test_open_policy_admits_everything_while_redis_is_down(
    fresh_redis: RedisServer, admission_for: Callable[..., object]
) -> None:
    admission, registry = await admission_for(fresh_redis.url, "open")  # type: ignore[misc]
    fresh_redis.kill()
    verdicts = [await admission.check("GET", "/x", "10.0.0.1") for _ in range(30)]
    assert all(v.allowed for v in verdicts)
    assert admission.status()["mode"] == "open"
    assert metric(registry, "lb_admission_mode", mode="open") == 1
    assert dict(verdicts[-1].headers) == {"RateLimit-Policy": '"default";q=5;w=5'}


async def test_closed_policy_answers_503_with_retry_after(
    fresh_redis: RedisServer, admission_for: Callable[..., object]
) -> None:
    admission, _ = await admission_for(fresh_redis.url, "closed")  # type: ignore[misc]
    fresh_redis.kill()
    verdicts = [await admission.check("GET", "/x", "10.0.0.1") for _ in range(3)]
    assert all(not v.allowed and v.status == 503 for v in verdicts)
    assert verdicts[-1].code == "admission_unavailable"
    assert dict(verdicts[-1].headers)["Retry-After"] == "1"
    assert admission.status()["mode"] == "closed"


async def test_starting_without_redis_degrades_then_connects(
    work_dir: Path, admission_for: Callable[..., object]
) -> None:
    from tests.support.net import free_port

    port = free_port()
    admission, _ = await admission_for(f"redis://127.0.0.1:{port}/0")  # type: ignore[misc]
    assert admission.status()["mode"] == "local"
    assert await burst(admission, "10.0.0.1") == 5  # limits hold from the first request
    server = RedisServer(work_dir / "redis-late", port=port).start()
    try:
        await wait_for(lambda: admission.status()["mode"] == "redis", within=5)
        assert await burst(admission, "10.0.0.4") == 5
    finally:
        server.stop()


async def test_an_idle_lb_notices_redis_going_away(
    fresh_redis: RedisServer, admission_for: Callable[..., object]
) -> None:
    admission, registry = await admission_for(fresh_redis.url)  # type: ignore[misc]
    assert admission.status()["mode"] == "redis"
    fresh_redis.kill()  # no request in flight: only the dropped connection tells
    took = await wait_for(lambda: admission.status()["mode"] == "local", within=2)
    assert took < 0.5
    assert metric(registry, "lb_admission_mode", mode="local") == 1


@pytest.mark.slow
async def test_a_cluster_node_lost_and_back(
    work_dir: Path, admission_for: Callable[..., object]
) -> None:
    from ops.servers import cluster_port, create_redis_cluster

    base = work_dir / f"cluster-failover-{os.getpid()}-{time.monotonic_ns()}"
    nodes = [RedisServer(base / str(i), port=cluster_port(), cluster=True) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        create_redis_cluster(nodes)
        admission, _ = await admission_for(nodes[0].url, cluster=True)  # type: ignore[misc]
        clients = [f"10.9.0.{i}" for i in range(30)]  # spread over all three nodes

        async def admitted() -> int:
            checks = [admission.check("GET", "/x", c) for c in clients for _ in range(10)]
            return sum(v.allowed for v in await asyncio.gather(*checks))

        assert await admitted() == 150  # 5 each
        nodes[1].kill()
        await wait_for(lambda: admission.status()["mode"] == "local", within=2)
        clients = [f"10.9.1.{i}" for i in range(30)]
        assert await admitted() == 150  # local buckets, same limits, no errors
        nodes[1] = RedisServer(base / "1", port=nodes[1].port, cluster=True).start()
        await wait_for(lambda: admission.status()["mode"] == "redis", within=15)
        clients = [f"10.9.2.{i}" for i in range(30)]
        assert await admitted() == 150
        assert admission.status()["mode"] == "redis"
    finally:
        for node in nodes:
            node.stop()
