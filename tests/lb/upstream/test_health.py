"""Health: rise/fall hysteresis and jitter (pure), and the checker against real HTTP servers."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web
from aiohttp.test_utils import TestServer

from lb.upstream.backend import HealthState
from lb.upstream.health import HealthChecker, next_delay, passed
from lb.upstream.pool import Pool
from tests.lb.upstream.support import settings
from tests.support.net import free_port


def test_fall_failed_checks_in_a_row_mark_unhealthy() -> None:
    state = HealthState(rise=2, fall=3)
    assert [state.record(False) for _ in range(2)] == [False, False]
    assert state.healthy
    state.record(True)  # a pass in between restarts the count
    assert [state.record(False) for _ in range(3)] == [False, False, True]
    assert not state.healthy


def test_rise_passed_checks_in_a_row_mark_healthy_again() -> None:
    state = HealthState(rise=2, fall=1, healthy=False)
    assert not state.record(True)
    assert not state.record(False)
    assert not state.record(True)
    assert state.record(True)
    assert state.healthy


def test_intervals_are_jittered_within_ten_percent() -> None:
    rng = random.Random(5)
    delays = [next_delay(2.0, 0.0, rng) for _ in range(200)]
    assert all(1.8 <= d <= 2.2 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # processes do not check in lockstep
    assert next_delay(2.0, 1.5, rng) <= 0.7
    assert next_delay(2.0, 5.0, rng) == 0.0


def test_only_2xx_passes() -> None:
    assert passed(200) and passed(204)
    assert not passed(301) and not passed(404) and not passed(500) and not passed(503)


class Replica:
    """A real HTTP server whose /healthz status and speed the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())

    async def healthz(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)
        return web.Response(status=self.status)


async def test_checker_marks_failing_and_unreachable_backends_unhealthy() -> None:
    good, sick = Replica(), Replica()
    await good.server.start_server()
    await sick.server.start_server()
    dead_port = free_port()
    try:
        ports = [good.server.port, sick.server.port, dead_port]
        cfg = settings(
            1,
            LB_BACKENDS=",".join(f"http://127.0.0.1:{p}" for p in ports),
            LB_HEALTH_FALL="2",
            LB_HEALTH_RISE="2",
            LB_HEALTH_TIMEOUT="0.3",
        )
        pool = Pool.from_settings(cfg)
        checker = HealthChecker(pool, cfg, random.Random(1))
        sick.status = 503
        await checker.start()
        try:
            await checker.check_all()
            assert [b.healthy for b in pool.backends] == [True, True, True]  # fall = 2
            await checker.check_all()
            assert [b.healthy for b in pool.backends] == [True, False, False]
            sick.status, sick.delay = 200, 1.0  # answers, but too slowly
            await checker.check_all()
            await checker.check_all()
            assert not pool.backends[1].healthy
            sick.delay = 0.0
            await checker.check_all()
            await checker.check_all()
            assert [b.healthy for b in pool.backends] == [True, True, False]
        finally:
            await checker.stop()
        assert not pool.active_checks
    finally:
        await good.server.close()
        await sick.server.close()


async def test_running_checker_detects_a_sick_backend_within_its_intervals() -> None:
    replica = Replica()
    await replica.server.start_server()
    try:
        cfg = settings(
            1,
            LB_BACKENDS=f"http://127.0.0.1:{replica.server.port}",
            LB_HEALTH_INTERVAL="0.05",
            LB_HEALTH_FALL="2",
        )
        pool = Pool.from_settings(cfg)
        checker = HealthChecker(pool, cfg, random.Random(1))
        await checker.start()
        assert pool.active_checks
        try:
            replica.status = 500
            for _ in range(100):  # bounded: 2 intervals are 0.1 s; allow up to 2 s
                if not pool.backends[0].healthy:
                    break
                await asyncio.sleep(0.02)
            assert not pool.backends[0].healthy
        finally:
            await checker.stop()
    finally:
        await replica.server.close()
