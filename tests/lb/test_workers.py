"""Worker processes on one port: SIGTERM drains without client errors; one scrape sees all."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.lb.conftest import FakeBackend, LbProcess
from tests.lb.test_admin import OPEN_ADMISSION, total

pytestmark = [pytest.mark.processes]


async def all_workers_up(lb: LbProcess, workers: int, within: float = 15.0) -> set[int]:
    """The worker pids once every worker is serving (each publishes a snapshot when bound)."""
    deadline = time.monotonic() + within
    while True:
        pids = {w["pid"] for w in lb.status()["per_worker"]}
        if len(pids) == workers or time.monotonic() > deadline:
            return pids
        await asyncio.sleep(0.1)


def exit_code(lb: LbProcess, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = lb.process.popen.poll() if lb.process.popen else None
        if code is not None:
            return code
        time.sleep(0.05)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_under_load_completes_every_in_flight_request(
    workers: int,
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    backends = fake_backends(2)
    lb = lb_process(
        {
            **OPEN_ADMISSION,
            "LB_BACKENDS": ",".join(b.url for b in backends),
            "LB_WORKERS": str(workers),
            "LB_DRAIN_TIMEOUT": "15",
        }
    )
    assert len(await all_workers_up(lb, workers)) == workers
    n = 40
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def slow(i: int) -> tuple[int, int]:
            # a body both ways, so the drain has to wait for the stream to finish
            async with session.post(
                f"{lb.url}/work/{i}?sleep=1.5&size=200000", data=b"p" * 5000
            ) as resp:
                return resp.status, len(await resp.read())

        tasks = [asyncio.ensure_future(slow(i)) for i in range(n)]
        # every request has reached a backend before the signal
        deadline = time.monotonic() + 10
        while sum(len(b.records()) for b in backends) < n and time.monotonic() < deadline:  # noqa: ASYNC110 - polling files written by other processes
            await asyncio.sleep(0.05)
        assert sum(len(b.records()) for b in backends) == n
        os.kill(lb.pid, signal.SIGTERM)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results == [(200, 200000)] * n
    assert exit_code(lb, 20) == 0


async def test_one_scrape_covers_all_workers(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    backends = fake_backends(2)
    lb = lb_process(
        {**OPEN_ADMISSION, "LB_BACKENDS": ",".join(b.url for b in backends), "LB_WORKERS": "2"}
    )
    assert len(await all_workers_up(lb, 2)) == 2
    sent = 60
    # fresh connections: SO_REUSEPORT spreads them over both workers
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(sent):
            async with session.get(f"{lb.url}/n/{i}?status={404 if i % 10 == 0 else 200}") as r:
                assert r.status in (200, 404)
    text = lb.metrics_text()
    assert total(text, "lb_requests_total") == sent
    assert total(text, "lb_requests_total", code_class="4xx") == sent // 10
    assert total(text, "lb_request_duration_seconds_count") == sent
    assert total(text, "lb_in_flight_requests") == 0
    await asyncio.sleep(1.0)  # workers publish their /status snapshots every 0.5 s
    status = lb.status()
    assert status["workers"] == 2
    assert sum(status["answered"].values()) == sent
    # both workers took a share (connections are hashed over the two sockets)
    shares = [w["answered"] for w in status["per_worker"]]
    assert len(shares) == 2 and min(shares) > 0 and sum(shares) == sent


@pytest.mark.slow
async def test_a_crashed_worker_is_replaced_and_service_goes_on(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    backends = fake_backends(1)
    lb = lb_process({**OPEN_ADMISSION, "LB_BACKENDS": backends[0].url, "LB_WORKERS": "2"})
    before = await all_workers_up(lb, 2)
    assert len(before) == 2
    os.kill(sorted(before)[0], signal.SIGKILL)
    connector = aiohttp.TCPConnector(force_close=True)
    statuses = []
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # requests keep being served meanwhile: the kernel stops routing to a dead socket
            async with session.get(f"{lb.url}/alive") as resp:
                statuses.append(resp.status)
            now = {w["pid"] for w in lb.status()["per_worker"]}
            if len(now) == 2 and now != before:
                break
            await asyncio.sleep(0.1)
    assert len(now) == 2 and len(now & before) == 1, now
    assert statuses and set(statuses) == {200}


def test_master_gives_up_when_workers_die_at_start(
    tmp_path: Path, lb_process: Callable[..., LbProcess]
) -> None:
    # every worker process dies at once (as a broken install would); the master must not
    # respawn them forever
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nif '--worker' in sys.orig_argv:\n    os._exit(3)\n"
    )
    lb = lb_process(
        {"LB_WORKERS": "2", "LB_BACKENDS": "http://127.0.0.1:9", "PYTHONPATH": str(tmp_path)},
        wait=False,
    )
    assert exit_code(lb, 20) == 1
    assert "giving up" in lb.process.log()


async def test_drain_and_restore_reach_every_worker(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    """With LB_WORKERS=2 the admin listener lives in the master: a drain must reach both
    workers' pools (through the control file), and a restore too."""
    b0, b1 = fake_backends(2)
    lb = lb_process({**OPEN_ADMISSION, "LB_BACKENDS": f"{b0.url},{b1.url}", "LB_WORKERS": "2"})
    workers = await all_workers_up(lb, 2)
    assert len(workers) == 2
    name0 = f"127.0.0.1:{b0.port}"
    # fresh connections: SO_REUSEPORT spreads them over both workers
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def spread(n: int) -> Counter[str]:
            seen: Counter[str] = Counter()
            for _ in range(n):
                async with session.get(f"{lb.url}/where") as resp:
                    seen[(await resp.json())["backend"]] += 1
            return seen

        async with session.post(f"{lb.admin_url}/backends/{name0}/drain") as resp:
            assert await resp.json() == {"backend": name0, "drained": True}
        answered_before = {w["pid"]: w["answered"] for w in lb.status()["per_worker"]}
        assert await spread(40) == Counter({"b1": 40})
        await asyncio.sleep(1.0)  # workers publish their /status snapshots every 0.5 s
        status = lb.status()
        # both workers served some of the 40, and each had b0 drained
        took = [w["answered"] - answered_before.get(w["pid"], 0) for w in status["per_worker"]]
        assert len(took) == 2 and min(took) > 0, took
        row = next(r for r in status["backends"] if r["name"] == name0)
        assert row["drained"] is True and row["eligible"] is False

        async with session.post(f"{lb.admin_url}/backends/{name0}/restore") as resp:
            assert (await resp.json())["drained"] is False
        assert (await spread(40))["b0"] > 0
        await asyncio.sleep(1.0)
        row = next(r for r in lb.status()["backends"] if r["name"] == name0)
        assert row["drained"] is False
