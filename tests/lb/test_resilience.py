"""Resilience of the real lb over real fake-backend processes: balancing, ejection, retries, breaker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.lb.conftest import FakeBackend, LbProcess

pytestmark = [pytest.mark.processes]

# Admission must not get in the way: these tests are about the upstream pool.
OPEN_ADMISSION = {"BUCKET_CAPACITY": "1000000", "LEAK_RATE": "1000000", "LB_RATE_RULES": ""}
HEALTH_INTERVAL = 0.5

StartBackends = Callable[[int], list[FakeBackend]]
StartLb = Callable[..., LbProcess]


def lb_env(backends: list[FakeBackend], **extra: str) -> dict[str, str]:
    return {
        **OPEN_ADMISSION,
        "LB_BACKENDS": ",".join(b.url for b in backends),
        "LB_HEALTH_INTERVAL": str(HEALTH_INTERVAL),
        **extra,
    }


def pool_name(backend: FakeBackend) -> str:
    return f"127.0.0.1:{backend.port}"


def find_row(status: Any, name: str) -> dict[str, Any]:
    """The pool snapshot row of backend `name`, wherever /status nests the pool."""
    if isinstance(status, dict):
        if status.get("name") == name and "breaker" in status:
            return status
        items: Any = status.values()
    elif isinstance(status, list):
        items = status
    else:
        items = ()
    for item in items:
        try:
            return find_row(item, name)
        except LookupError:
            continue
    raise LookupError(f"no backend {name} in /status")


async def admin_status(session: aiohttp.ClientSession, lb: LbProcess) -> Any:
    async with session.get(
        f"{lb.admin_url}/status", headers={"Accept": "application/json"}
    ) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


async def backend_row(session: aiohttp.ClientSession, lb: LbProcess, name: str) -> dict[str, Any]:
    return find_row(await admin_status(session, lb), name)


def out_of_rotation(row: dict[str, Any]) -> bool:
    return not row["healthy"] or row["ejected_until"] is not None or row["breaker"] == "open"


async def wait_until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Poll `check` until true; returns the seconds it took. Bounded by `within` seconds."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise TimeoutError(f"condition not met within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def get_many(
    session: aiohttp.ClientSession,
    url: str,
    count: int,
    concurrency: int,
    results: list[tuple[int, str | None]] | None = None,
) -> list[tuple[int, str | None]]:
    """`count` GETs of `url` from `concurrency` workers: [(status, serving backend or body)]."""
    out = results if results is not None else []
    left = iter(range(count))

    async def worker() -> None:
        for _ in left:
            async with session.get(url) as resp:
                body = await resp.read()
                # the serving backend's name, or what went wrong
                text = json.loads(body).get("backend") if resp.status == 200 else body.decode()
                out.append((resp.status, text))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def recorded(backends: list[FakeBackend], path: str) -> Counter[str]:
    """How many times each backend saw a request for `path`."""
    seen: Counter[str] = Counter()
    for backend in backends:
        seen[backend.name] += sum(1 for line in backend.records() if line.split(" ")[1] == path)
    return +seen


@pytest.mark.slow
async def test_three_backends_get_even_shares_under_both_algorithms(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    backends = fake_backends(3)
    # Each request takes ~20 ms on the backend, like a real view: shares then reflect the
    # balancer, not which replica the two shared CPUs happen to schedule first.
    for algorithm in ("p2c", "round_robin"):
        lb = lb_process(lb_env(backends, LB_ALGORITHM=algorithm))
        async with aiohttp.ClientSession() as session:
            results = await get_many(session, f"{lb.url}/tours/?sleep=0.02", 600, concurrency=6)
        lb.process.stop()
        assert [s for s, _ in results] == [200] * 600
        shares = Counter(name for _, name in results)
        assert set(shares) == {b.name for b in backends}, (algorithm, shares)
        for count in shares.values():
            assert 170 <= count <= 230, (algorithm, shares)  # 200 each, within 15 %


@pytest.mark.slow
async def test_killing_one_of_three_backends_during_600_gets_fails_no_request(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    backends = fake_backends(3)
    victim = backends[1]
    lb = lb_process(lb_env(backends, LB_OUTLIER_BASE_EJECTION="1"))
    results: list[tuple[int, str | None]] = []
    async with aiohttp.ClientSession() as session:
        load = asyncio.create_task(
            get_many(session, f"{lb.url}/tours/?sleep=0.005", 600, concurrency=6, results=results)
        )

        async def warmed_up() -> bool:
            return len(results) >= 150 or load.done()

        await wait_until(warmed_up, within=30)
        await asyncio.to_thread(victim.kill)

        async def victim_out() -> bool:
            return out_of_rotation(await backend_row(session, lb, pool_name(victim)))

        took = await wait_until(victim_out, within=10)
        await asyncio.wait_for(load, timeout=60)

        assert len(results) == 600
        failed = [(status, text) for status, text in results if status != 200]
        assert not failed, f"failed responses: {failed}"
        assert took <= 2 * HEALTH_INTERVAL * 1.1 + 0.5, f"out of rotation after {took:.2f} s"
        served = Counter(name for _, name in results)
        assert served[victim.name] > 0 and len(served) == 3

        await asyncio.to_thread(victim.start)  # the replica comes back on its port

        async def victim_back() -> bool:
            return not out_of_rotation(await backend_row(session, lb, pool_name(victim)))

        await wait_until(victim_back, within=15)
        after = await get_many(session, f"{lb.url}/tours/", 90, concurrency=3)
    assert [s for s, _ in after] == [200] * 90
    assert Counter(name for _, name in after)[victim.name] >= 15  # back in rotation


async def test_post_without_idempotency_key_is_not_resent_when_the_backend_dies(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    backends = fake_backends(3)
    lb = lb_process(lb_env(backends))
    path = f"/api/bookings/{uuid.uuid4().hex}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{lb.url}{path}?exit=1", json={"tour": 1, "seats": 2}) as resp,
    ):
        body = await resp.json(content_type=None)
        assert resp.status == 502
    assert body["code"] == "bad_gateway"
    seen = recorded(backends, path)
    assert sum(seen.values()) == 1, seen  # exactly one backend saw it, exactly once
    (died,) = (b for b in backends if b.name in seen)
    assert died.process is not None and died.process.popen is not None
    assert died.process.popen.wait(5) is not None  # it really died mid-request
    assert all(b.process and b.process.alive() for b in backends if b is not died)


async def test_requests_that_may_be_repeated_are_retried_on_other_backends(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    backends = fake_backends(3)
    lb = lb_process(lb_env(backends, LB_MAX_RETRIES="2"))
    keyed, get = f"/api/bookings/{uuid.uuid4().hex}", f"/api/tours/{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{lb.url}{keyed}?reset=1", json={}, headers={"Idempotency-Key": uuid.uuid4().hex}
        ) as resp:
            assert resp.status == 502
        async with session.get(f"{lb.url}{get}?reset=1") as resp:
            assert resp.status == 502
    # one attempt plus two retries, each on a different backend
    assert recorded(backends, keyed) == Counter({b.name: 1 for b in backends})
    assert recorded(backends, get) == Counter({b.name: 1 for b in backends})


async def test_a_post_that_never_reached_a_backend_goes_to_another_one(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    backends = fake_backends(3)
    dead = backends[2]
    # Slow health checks: the dead backend is found only by the requests themselves.
    lb = lb_process(lb_env(backends, LB_HEALTH_FALL="100"))
    dead.kill()
    paths = [f"/api/bookings/{uuid.uuid4().hex}" for _ in range(12)]
    async with aiohttp.ClientSession() as session:
        for path in paths:
            async with session.post(f"{lb.url}{path}", json={"seats": 1}) as resp:
                assert resp.status == 200
        row = await backend_row(session, lb, pool_name(dead))
    assert row["failures"] >= 1  # some POSTs met the dead backend and were moved on
    for path in paths:
        assert sum(recorded(backends, path).values()) == 1


@pytest.mark.slow
async def test_a_half_open_breaker_admits_exactly_one_of_50_concurrent_requests(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process(
        lb_env(
            [backend],
            LB_BREAKER_MIN_REQUESTS="5",
            LB_BREAKER_RATIO="0.5",
            LB_BREAKER_OPEN="1",
            LB_OUTLIER_FAILURES="1000",
            LB_MAX_RETRIES="0",
        )
    )
    name = pool_name(backend)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # 502s: a gateway failure counts whoever met it (a 500 needs several clients)
        for _ in range(5):
            async with session.get(f"{lb.url}/fail?status=502") as resp:
                assert resp.status == 502
        assert (await backend_row(session, lb, name))["breaker"] == "open"
        async with session.get(f"{lb.url}/while-open") as resp:
            assert resp.status == 503
            assert (await resp.json(content_type=None))["code"] == "no_backend"

        async def half_open() -> bool:
            return (await backend_row(session, lb, name))["breaker"] == "half_open"

        await wait_until(half_open, within=10)

        async def one(i: int) -> tuple[int, str]:
            async with session.get(f"{lb.url}/probe?sleep=1.5&i={i}") as resp:
                return resp.status, (await resp.json(content_type=None)).get("code", "")

        answers = Counter(await asyncio.gather(*(one(i) for i in range(50))))
        assert answers == Counter({(200, ""): 1, (503, "no_backend"): 49}), answers
        assert backend.stats()["by_path"].get("/probe") == 1
        assert backend.stats()["by_path"].get("/while-open") is None
        assert (await backend_row(session, lb, name))["breaker"] == "closed"
        async with session.get(f"{lb.url}/after") as resp:
            assert resp.status == 200


async def test_active_health_checks_take_a_failing_backend_out_and_bring_it_back(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    backends = fake_backends(3)
    sick = backends[0]
    lb = lb_process(lb_env(backends))
    async with aiohttp.ClientSession() as session:
        await asyncio.to_thread(sick.set_health, 503)  # no traffic: only the checks can tell

        async def sick_out() -> bool:
            return not (await backend_row(session, lb, pool_name(sick)))["healthy"]

        took = await wait_until(sick_out, within=10)
        # fall = 2 failed checks; the first may come up to one (jittered) interval late
        assert took <= 2 * HEALTH_INTERVAL * 1.1 + 0.5, f"unhealthy after {took:.2f} s"
        before = (await asyncio.to_thread(sick.stats))["requests"]
        during = await get_many(session, f"{lb.url}/tours/", 60, concurrency=3)
        assert [s for s, _ in during] == [200] * 60
        assert (await asyncio.to_thread(sick.stats))["requests"] == before

        await asyncio.to_thread(sick.set_health, 200)

        async def sick_back() -> bool:
            return (await backend_row(session, lb, pool_name(sick)))["healthy"]

        await wait_until(sick_back, within=10)
        after = await get_many(session, f"{lb.url}/tours/", 60, concurrency=3)
    assert Counter(name for _, name in after)[sick.name] >= 10


async def test_backpressure_is_passed_through_never_retried_nor_ejected(
    fake_backends: StartBackends, lb_process: StartLb
) -> None:
    backends = fake_backends(3)
    lb = lb_process(lb_env(backends, LB_BREAKER_MIN_REQUESTS="5", LB_OUTLIER_FAILURES="3"))
    path = f"/api/tours/{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as session:
        for status in [503] * 15 + [429] * 15:
            async with session.get(f"{lb.url}{path}?status={status}") as resp:
                assert resp.status == status
                assert (await resp.json(content_type=None))["backend"]  # the backend's own answer
        status_rows = [await backend_row(session, lb, pool_name(b)) for b in backends]
    assert sum(recorded(backends, path).values()) == 30  # each request reached one backend once
    for row in status_rows:
        assert row["ejected_until"] is None and row["ejections"] == 0
        assert row["breaker"] == "closed" and row["failures"] == 0
