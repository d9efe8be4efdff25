"""One fetch per key (lb/cache/coalesce.py), and the cache's settings (lb/config.py)."""

from __future__ import annotations

import asyncio

import pytest

from lb.cache.coalesce import Flights, Landing
from lb.config import ConfigError, load_settings


def test_one_leader_per_key_and_waiters_get_its_landing() -> None:
    async def run() -> None:
        flights = Flights(asyncio.get_running_loop(), timeout=5)
        leader = flights.lead("k")
        assert leader is not None and flights.lead("k") is None
        assert flights.lead("other") is not None
        waiting = [asyncio.ensure_future(flights.wait(leader)) for _ in range(3)]
        await asyncio.sleep(0)
        assert leader.waiters == 3
        flights.land(leader, Landing.PASS)
        flights.land(leader, Landing.STORED)  # only the first landing counts
        assert [await w for w in waiting] == [(Landing.PASS, None)] * 3
        assert flights.get("k") is None and flights.lead("k") is not None

    asyncio.run(run())


def test_waiters_give_up_after_the_lock_timeout() -> None:
    async def run() -> None:
        flights = Flights(asyncio.get_running_loop(), timeout=0.05)
        leader = flights.lead("k")
        assert leader is not None
        assert await flights.wait(leader) is None
        assert flights.timeouts == 1 and not leader.done.done()  # the leader goes on

    asyncio.run(run())


def test_cache_settings() -> None:
    settings = load_settings({})
    assert settings.cache_bytes == 0  # off unless asked for
    on = load_settings(
        {
            "LB_CACHE_BYTES": "1000000",
            "LB_CACHE_MAX_ENTRY_BYTES": "5000",
            "LB_CACHE_LOCK_TIMEOUT": "0.5",
        }
    )
    assert (on.cache_bytes, on.cache_max_entry_bytes, on.cache_lock_timeout) == (
        1000000,
        5000,
        0.5,
    )
    with pytest.raises(ConfigError, match="LB_CACHE_BYTES"):
        load_settings({"LB_CACHE_BYTES": "-1"})
    with pytest.raises(ConfigError, match="LB_CACHE_LOCK_TIMEOUT"):
        load_settings({"LB_CACHE_LOCK_TIMEOUT": "0"})
