"""The admitter: slots under the limit, the bounded wait, priorities, the reserve, shedding."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from lb.errors import Overloaded
from lb.overload import Admitter
from lb.priority import DEFAULT_PRIORITY_RULES, Classifier, parse_priority_rules
from lb.upstream.backend import Outcome
from lb.upstream.pool import Pool
from tests.lb.upstream.support import settings


def make(
    backends: int = 1, limit: int = 2, delay: float = 0.05, reserve: float = 0.0
) -> tuple[Pool, Admitter]:
    pool = Pool.from_settings(settings(backends), rng=random.Random(1))
    admitter = Admitter(
        pool,
        classifier=Classifier(parse_priority_rules(DEFAULT_PRIORITY_RULES)),
        clock=time.monotonic,
        rng=random.Random(2),
        floor=limit,
        ceiling=limit,  # a fixed limit: these tests are about the wait, not the learning
        queue_delay=delay,
        critical_reserve=reserve,
    )
    return pool, admitter


async def test_slots_up_to_the_limit_then_a_wait_that_a_freed_slot_ends() -> None:
    pool, admitter = make(limit=2)
    first = await admitter.acquire("normal")
    second = await admitter.acquire("normal")
    assert first is second is pool.backends[0] and pool.backends[0].outstanding == 2
    waiting = asyncio.create_task(admitter.acquire("normal"))
    await asyncio.sleep(0.01)
    assert not waiting.done() and admitter.waiting == 1
    pool.finish(first, Outcome.OK)
    assert await waiting is first
    assert pool.backends[0].outstanding == 2 and admitter.waiting == 0


async def test_a_wait_past_the_queue_delay_is_a_fast_503_overloaded_with_retry_after() -> None:
    _pool, admitter = make(limit=1, delay=0.05)
    await admitter.acquire("normal")
    started = time.monotonic()
    with pytest.raises(Overloaded) as caught:
        await admitter.acquire("normal")
    assert 0.04 <= time.monotonic() - started < 0.5
    error = caught.value
    assert (error.status, error.code) == (503, "overloaded")
    retry_after = dict(error.headers)["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 30
    assert admitter.shed["normal"] == 1 and admitter.waiting == 0
    # the queue now counts as standing: the next normal request waits a tenth as long
    started = time.monotonic()
    with pytest.raises(Overloaded):
        await admitter.acquire("normal")
    assert time.monotonic() - started < 0.03


async def test_a_freed_slot_goes_to_the_critical_class_first() -> None:
    pool, admitter = make(limit=1, delay=1.0)
    held = await admitter.acquire("normal")
    normal = asyncio.create_task(admitter.acquire("normal"))
    await asyncio.sleep(0.01)
    critical = asyncio.create_task(admitter.acquire("critical"))
    await asyncio.sleep(0.01)
    pool.finish(held, Outcome.OK)
    assert await critical is held
    assert not normal.done()
    pool.finish(held, Outcome.OK)
    assert await normal is held


async def test_the_reserve_keeps_the_last_slots_for_the_critical_class() -> None:
    pool, admitter = make(backends=2, limit=5, delay=0.02, reserve=0.2)  # 2 of 10 reserved
    for _ in range(8):
        await admitter.acquire("normal")
    with pytest.raises(Overloaded):
        await admitter.acquire("low")
    assert await admitter.acquire("critical") is not None
    assert await admitter.acquire("critical") is not None
    assert pool.in_flight == 10


async def test_no_eligible_backend_is_none_not_a_wait() -> None:
    pool, admitter = make()
    pool.drain(pool.backends[0].name)
    assert await admitter.acquire("normal") is None
    assert admitter.waiting == 0


async def test_a_waiter_whose_client_left_gives_its_slot_back() -> None:
    pool, admitter = make(limit=1, delay=1.0)
    held = await admitter.acquire("normal")
    waiting = asyncio.create_task(admitter.acquire("normal"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.sleep(0)
    assert admitter.waiting == 0
    pool.finish(held, Outcome.OK)
    assert pool.backends[0].outstanding == 0
    assert await admitter.acquire("normal") is held


def test_classify_uses_the_rules() -> None:
    _, admitter = make()
    assert admitter.classify("POST", "/api/bookings/1/pay/") == "critical"
    assert admitter.classify("GET", "/api/tours/") == "normal"


async def test_a_backend_added_live_gets_a_limit_and_takes_slots() -> None:
    pool, admitter = make(backends=1, limit=1)
    bigger = Pool.from_settings(settings(2), rng=random.Random(3))
    added, _removed = pool.set_backends(bigger.backends)
    assert len(added) == 1
    held = [await admitter.acquire("normal"), await admitter.acquire("normal")]
    assert {b.name for b in held} == {b.name for b in pool.backends}  # one slot on each
    assert sorted(row["name"] for row in admitter.snapshot()["backends"]) == sorted(
        b.name for b in pool.backends
    )


async def test_a_limit_probing_its_floor_gives_way_to_a_wait_that_ran_out() -> None:
    """A probe pins a limit at its floor to measure the backend unloaded: a measurement, not
    the backend's verdict. A request whose wait began outside a standing queue and ran out
    during it gets a slot under the limit from before the probe, not a 503; one that began
    waiting in a standing queue is shed as before."""
    pool = Pool.from_settings(settings(1), rng=random.Random(1))
    admitter = Admitter(
        pool,
        classifier=Classifier(parse_priority_rules(DEFAULT_PRIORITY_RULES)),
        clock=time.monotonic,
        rng=random.Random(2),
        floor=1,
        ceiling=4,
        queue_delay=0.05,
        critical_reserve=0.0,
    )
    (backend,) = pool.backends
    limit = admitter.limits[backend]
    limit._start_probe()  # as `sample()` starts one when the probe interval is up
    assert limit.probing and limit.limit == 1 and limit.unprobed_limit == 4
    held = await admitter.acquire("normal")
    started = time.monotonic()
    assert await admitter.acquire("normal") is backend  # waited its 50 ms, then given way
    assert 0.04 <= time.monotonic() - started < 0.5
    assert backend.outstanding == 2 and admitter.waiting == 0 and admitter.shed["normal"] == 0
    # a standing queue (a shed just happened): the same wait is shed
    admitter._all.hold(time.monotonic() + 10)
    with pytest.raises(Overloaded):
        await admitter.acquire("normal")
    pool.finish(held, Outcome.OK)


async def test_a_critical_queue_that_stands_sheds_its_waiters_in_a_tenth_of_the_delay() -> None:
    """A critical request waits the whole queue delay while its class is served in time;
    once critical demand itself outruns the backends (its queue never empties for a
    queue delay), waiting longer only delays the same admissions: its waiters are shed
    past the target, in milliseconds."""
    pool, admitter = make(limit=1, delay=0.1)
    held = await admitter.acquire("critical")
    # a lone critical waiter is patient: it gets the slot freed after 60 ms
    lone = asyncio.create_task(admitter.acquire("critical"))
    await asyncio.sleep(0.06)
    pool.finish(held, Outcome.OK)
    assert await lone is held
    # now the slot never frees: critical requests keep arriving for longer than the delay
    waiters = []
    for _ in range(15):
        waiters.append(asyncio.create_task(admitter.acquire("critical")))
        await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(Overloaded):
        await admitter.acquire("critical")
    assert time.monotonic() - started < 0.05  # not the 0.1 s queue delay
    assert admitter.snapshot()["critical_standing"]  # and /status says why
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, Overloaded) for r in results)
    assert admitter.shed["critical"] == 16 and admitter.waiting == 0
