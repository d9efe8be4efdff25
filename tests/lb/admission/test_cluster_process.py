"""The lb in front of a Redis Cluster: one burst limit across lbs, clients spread over nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from ops.servers import RedisServer
from tests.lb.conftest import LbProcess
from tests.lb.test_admission_process import LIMIT_5_1, Answer, admitted, fetch_all, mode

pytestmark = [pytest.mark.processes, pytest.mark.slow]


@pytest.mark.redis
def test_burst_against_a_redis_cluster(
    fake_backends: Callable[[int], list[Any]],
    lb_process: Callable[..., LbProcess],
    redis_cluster: list[RedisServer],
) -> None:
    (backend,) = fake_backends(1)
    env = {
        **LIMIT_5_1,
        "LB_BACKENDS": backend.url,
        "REDIS_URL": redis_cluster[0].url,
        "LB_REDIS_CLUSTER": "1",
        "LB_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    first, second = lb_process(env), lb_process(env)
    assert mode(first) == mode(second) == "redis"
    # clients of their own on the shared session cluster, spread over its nodes
    clients = [f"198.18.{int(time.time()) % 250}.{i}" for i in range(1, 7)]

    async def split() -> list[list[Answer]]:
        return await asyncio.gather(
            *(
                fetch_all(f"{lb.url}/api/tours/", 10, headers=[{"X-Forwarded-For": c}] * 10)
                for c in clients
                for lb in (first, second)
            )
        )

    answers = asyncio.run(split())
    per_client = [admitted(answers[2 * i]) + admitted(answers[2 * i + 1]) for i in range(6)]
    assert mode(first) == mode(second) == "redis"  # no false failover under the burst
    assert per_client == [5] * 6
