"""One client cannot take a backend out (real lb, real fake-backend processes).

A request that makes the application fail (a 500 on a trigger, as a body nested too deep
once did) counts against a backend only when several clients meet such failures; one
address repeating it leaves every breaker closed and every backend in rotation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from tests.lb.conftest import FakeBackend, LbProcess

pytestmark = [pytest.mark.processes]

OPEN_ADMISSION = {"BUCKET_CAPACITY": "1000000", "LEAK_RATE": "1000000", "LB_RATE_RULES": ""}


def lb_env(backends: list[FakeBackend], **extra: str) -> dict[str, str]:
    return {
        **OPEN_ADMISSION,
        "LB_BACKENDS": ",".join(b.url for b in backends),
        # the defaults of the breaker and ejection, but quick to trip
        "LB_BREAKER_MIN_REQUESTS": "10",
        "LB_OUTLIER_FAILURES": "3",
        "LB_TRUSTED_PROXIES": "127.0.0.0/8",
        **extra,
    }


async def hammer(lb: LbProcess, count: int, addresses: list[str]) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:

        async def one(i: int) -> int:
            headers = {"X-Forwarded-For": addresses[i % len(addresses)]}
            async with session.post(
                f"{lb.url}/api/auth/token/?status=500", data=b"[" * 2000, headers=headers
            ) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_200_failing_requests_from_one_address_leave_every_backend_in(
    fake_backends: Callable[[int], list[FakeBackend]], lb_process: Callable[..., LbProcess]
) -> None:
    backends = fake_backends(3)
    lb = lb_process(lb_env(backends))
    statuses = await hammer(lb, 200, ["203.0.113.9"])
    assert statuses == [500] * 200  # the backend's own answer, passed on
    rows = lb.status()["backends"]
    assert [r["breaker"] for r in rows] == ["closed"] * 3
    assert all(r["eligible"] and r["ejected_until"] is None for r in rows), rows
    assert all(r["failures"] == 0 for r in rows)
    assert sum(b.stats()["requests"] for b in backends) == 200  # a POST is never re-sent


async def test_the_same_failures_from_many_addresses_do_count(
    fake_backends: Callable[[int], list[FakeBackend]], lb_process: Callable[..., LbProcess]
) -> None:
    backends = fake_backends(3)
    lb = lb_process(lb_env(backends))
    addresses = [f"198.51.100.{i}" for i in range(1, 9)]
    await hammer(lb, 60, addresses)
    rows = lb.status()["backends"]
    assert sum(r["failures"] for r in rows) > 0
    assert any(r["breaker"] != "closed" or r["ejected_until"] is not None for r in rows), rows
