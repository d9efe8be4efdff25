"""Overload through the real lb over real sockets: a backend of fixed capacity, open-loop load.

The backend serves N requests at a time, each in a fixed service time (capacity N / S per
second); the client offers several times that on a fixed schedule, whatever the answers do.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ops.bench.openloop import Result, percentile, run_open_loop
from tests.lb.conftest import LbProcess
from tests.support.net import free_port
from tests.support.processes import Process, python

pytestmark = [pytest.mark.processes, pytest.mark.slow]

OPEN_ADMISSION = {"BUCKET_CAPACITY": "1000000", "LEAK_RATE": "1000000", "LB_RATE_RULES": ""}
SLOTS = 4
SERVICE = 0.1
CAPACITY = SLOTS / SERVICE  # 40 requests per second

StartLb = Callable[..., LbProcess]


class CapacityBackend:
    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.name = f"127.0.0.1:{port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_control/stats", timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.fixture
def capacity_backend(tmp_path: Path) -> Iterator[Callable[..., CapacityBackend]]:
    started: list[Process] = []

    def start(slots: int = SLOTS, service: float = SERVICE, *extra: str) -> CapacityBackend:
        port = free_port()
        argv = python(
            "-m",
            "tests.support.capacity_backend",
            "--port",
            str(port),
            "--slots",
            str(slots),
            "--service",
            str(service),
            *extra,
        )
        process = Process(argv, log_path=tmp_path / f"capacity-{port}.log").start()
        started.append(process)
        process.wait_port(port)
        return CapacityBackend(process, port)

    yield start
    for process in started:
        if process.alive():
            os.kill(process.pid, signal.SIGCONT)
        process.stop()


def lb_env(backend: CapacityBackend, **extra: str) -> dict[str, str]:
    return {
        **OPEN_ADMISSION,
        "LB_BACKENDS": backend.url,
        "LB_HEALTH_INTERVAL": "0.5",
        "LB_LOG_LEVEL": "INFO",
        "LB_PROBE_INTERVAL": "10",  # a probe soon after start: the warm-up waits it out
        **extra,
    }


def browse(i: int) -> tuple[str, str, str, dict[str, str], bytes | None]:
    return ("normal", "GET", f"/api/tours/{i % 50}/", {}, None)


def backend_row(lb: LbProcess, name: str) -> dict[str, Any]:
    return next(row for row in lb.status()["backends"] if row["name"] == name)


def warm_up(lb: LbProcess) -> None:
    """Let the limit learn the backend's unloaded latency before the measurement: traffic
    until its first probe is over (2-12 s after the start with LB_PROBE_INTERVAL=10; the
    next comes 5 s or more later), so the measurement never catches the limit at its floor."""
    for _ in range(15):
        asyncio.run(run_open_loop(lb.url, CAPACITY * 0.8, 1.0, browse))
        if all(b["probes"] >= 1 for b in lb.status()["overload"]["backends"]):
            return
    raise AssertionError("the limit never finished its first probe")


def test_five_times_capacity_keeps_goodput_and_sheds_the_excess_fast(
    capacity_backend: Callable[..., CapacityBackend], lb_process: StartLb
) -> None:
    backend = capacity_backend()
    lb = lb_process(lb_env(backend))
    warm_up(lb)
    shed_before = lb.status()["overload"]["shed"]["normal"]
    duration = 4.0
    results = asyncio.run(run_open_loop(lb.url, CAPACITY * 5, duration, browse))
    ok = [r for r in results if r.status == 200]
    shed = [r for r in results if r.status == 503]
    others = [r for r in results if r.status not in (200, 503)]
    assert others == [], others[:5]
    # every excess request: 503 overloaded with a Retry-After of whole seconds >= 1
    assert shed and all(r.code == "overloaded" for r in shed), {r.code for r in shed}
    assert all(r.retry_after and int(r.retry_after) >= 1 for r in shed)
    # goodput: at least 85% of what the backend can do in the time the load lasted
    goodput = len(ok) / duration
    assert goodput >= 0.85 * CAPACITY, (goodput, len(shed))
    # admitted requests stay fast: a small multiple of the service time
    assert percentile([r.seconds for r in ok], 0.95) <= 4 * SERVICE
    # shed answers are fast: well under the service time
    assert percentile([r.seconds for r in shed], 0.95) <= SERVICE
    # the busy backend was never called dead
    row = backend_row(lb, backend.name)
    assert row["healthy"] and row["ejections"] == 0 and row["ejected_until"] is None
    assert row["breaker"] == "closed"
    log = lb.process.log()
    assert "unhealthy" not in log and "ejected for" not in log
    # and the state is visible
    overload = lb.status()["overload"]
    assert overload["shed"]["normal"] - shed_before == len(shed)
    assert overload["backends"][0]["limit"] >= SLOTS
    metrics = lb.metrics_text()
    assert 'lb_overload_shed_total{class="normal"}' in metrics
    assert "lb_backend_concurrency_limit" in metrics


def test_critical_class_is_admitted_while_normal_is_shed(
    capacity_backend: Callable[..., CapacityBackend], lb_process: StartLb
) -> None:
    backend = capacity_backend()
    lb = lb_process(lb_env(backend))
    warm_up(lb)

    # a tenth of the arrivals are checkout (half of capacity), the rest browse: 5x in all
    def mix(i: int) -> tuple[str, str, str, dict[str, str], bytes | None]:
        if i % 10 == 0:
            return ("critical", "POST", f"/api/bookings/{i}/pay/", {}, b"{}")
        return browse(i)

    results = asyncio.run(run_open_loop(lb.url, CAPACITY * 5, 4.0, mix))
    critical = [r for r in results if r.klass == "critical"]
    normal = [r for r in results if r.klass == "normal"]
    assert {r.status for r in results} <= {200, 503}
    critical_ok = sum(r.status == 200 for r in critical) / len(critical)
    normal_ok = sum(r.status == 200 for r in normal) / len(normal)
    assert critical_ok >= 0.95, critical_ok
    assert normal_ok <= 0.4, normal_ok
    shed = lb.status()["overload"]["shed"]
    assert shed["normal"] > 10 * shed["critical"]


def test_a_saturated_backend_whose_check_times_out_stays_and_a_stopped_one_goes(
    capacity_backend: Callable[..., CapacityBackend], lb_process: StartLb
) -> None:
    # the health check waits for a slot like any request: behind 0.2 s of work it cannot
    # answer within LB_HEALTH_TIMEOUT while the backend is saturated
    backend = capacity_backend(2, 0.2, "--queued-healthz")
    lb = lb_process(lb_env(backend, LB_HEALTH_TIMEOUT="0.05", LB_HEALTH_FALL="2"))

    async def scenario() -> tuple[list[Result], list[bool], int]:
        load = asyncio.create_task(run_open_loop(lb.url, 30, 5.0, browse))
        healthy: list[bool] = []
        timeouts = 0
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(1.0)
            while not load.done():
                row = await asyncio.to_thread(backend_row, lb, backend.name)
                healthy.append(bool(row["healthy"]) and row["ejected_until"] is None)
                try:
                    async with session.get(
                        f"{backend.url}/healthz", timeout=aiohttp.ClientTimeout(total=0.05)
                    ) as resp:
                        await resp.read()
                except TimeoutError:
                    timeouts += 1
                await asyncio.sleep(0.2)
        return await load, healthy, timeouts

    results, healthy, timeouts = asyncio.run(scenario())
    assert timeouts >= 3, "the backend was not saturated enough for its check to time out"
    assert sum(r.status == 200 for r in results) >= 20
    assert healthy and all(healthy), healthy
    # now it completes nothing: stopped, connections accepted by the kernel, no answers
    os.kill(backend.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while backend_row(lb, backend.name)["healthy"]:
            assert time.monotonic() - stopped < 4.0, "a stopped backend stayed in rotation"
            time.sleep(0.1)
    finally:
        os.kill(backend.process.pid, signal.SIGCONT)
    # busy grace (interval + timeout) + fall checks at the interval, with slack for jitter
    assert time.monotonic() - stopped <= 3.0


def test_a_five_second_overload_writes_a_bounded_number_of_log_lines(
    capacity_backend: Callable[..., CapacityBackend], lb_process: StartLb
) -> None:
    backend = capacity_backend()
    lb = lb_process(lb_env(backend))
    before = len(lb.process.log().splitlines())
    results = asyncio.run(run_open_loop(lb.url, CAPACITY * 8, 5.0, browse))
    time.sleep(1.0)
    shed = sum(r.status == 503 for r in results)
    assert shed > 500
    lines = lb.process.log().splitlines()[before:]
    assert len(lines) <= 20, lines
    assert any("overload: shedding normal" in line for line in lines)


def test_a_crowd_onto_an_idle_backend_is_let_through_not_shed(
    capacity_backend: Callable[..., CapacityBackend], lb_process: StartLb
) -> None:
    """After a quiet spell the limit sits a little above the use (app-limited); a crowd
    then arrives at a backend that has room to spare (its latency stays flat). The limit,
    not the backend, holds the crowd back: it doubles every few round trips instead of
    growing ~15% a window, and the crowd is answered, not told the service is overloaded.
    (50 ms answers, so a busy machine's few milliseconds of noise do not look like queueing.)"""
    backend = capacity_backend(2000, 0.05)  # 50 ms whatever the load: no queueing inside
    # waits of up to half a second: doubling every two round trips takes 5 -> 40 in 0.3-0.4 s
    lb = lb_process(lb_env(backend, LB_QUEUE_DELAY="0.5"))
    # quiet traffic past the first minRTT probe (the next is 5 s or more away): the limit
    # comes down to a little above the use
    for _ in range(15):
        asyncio.run(run_open_loop(lb.url, 10, 1.0, browse))
        if lb.status()["overload"]["backends"][0]["probes"] >= 1:
            break
    asyncio.run(run_open_loop(lb.url, 10, 1.0, browse))
    limit = lb.status()["overload"]["backends"][0]["limit"]
    assert limit <= 8, limit  # the quiet spell left a tight limit
    results = asyncio.run(run_open_loop(lb.url, 600, 1.5, browse))  # 30 in flight wanted
    shed = [r for r in results if r.status == 503]
    assert {r.status for r in results} <= {200, 503}
    assert len(shed) <= 0.03 * len(results), (len(shed), len(results), limit)
    assert lb.status()["overload"]["backends"][0]["limit"] >= 30
