"""Fixtures for admission tests: a 3-node Redis Cluster, and every bucket store by name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lb.admission.limiter import LocalLimiter
from lb.admission.redis_limiter import RedisLimiter
from lb.config import admission_options, load_settings
from ops.servers import RedisServer, create_redis_cluster


@pytest.fixture(scope="session")
def redis_cluster(work_dir: Path) -> Iterator[list[RedisServer]]:
    """Three cluster-mode redis-servers joined into one cluster of masters."""
    nodes = [RedisServer(work_dir / f"cluster-{uuid.uuid4().hex[:6]}", cluster=True) for _ in "abc"]
    try:
        for node in nodes:
            node.start()
        create_redis_cluster(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def redis_limiter(url: str, *, cluster: bool = False, timeout: str = "1") -> RedisLimiter:
    """A RedisLimiter built the way the lb builds it, from settings."""
    env = {"REDIS_URL": url, "LB_REDIS_CLUSTER": "1" if cluster else "0"}
    env["LB_REDIS_TIMEOUT"] = timeout
    return RedisLimiter.from_options(admission_options(load_settings(env)))


@pytest.fixture(
    params=[
        "local",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.slow]),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LocalLimiter | RedisLimiter]:
    """Each bucket store in turn; the same tests must pass against all of them."""
    limiter: LocalLimiter | RedisLimiter
    if request.param == "local":
        limiter = LocalLimiter()
    elif request.param == "redis":
        limiter = redis_limiter(request.getfixturevalue("redis_server").url)
    else:
        nodes = request.getfixturevalue("redis_cluster")
        limiter = redis_limiter(nodes[0].url, cluster=True)
    await limiter.start()
    yield limiter
    await limiter.close()
