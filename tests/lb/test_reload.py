"""SIGHUP reloads the lb without a refused connection or a lost request.

A master with 2 workers under a steady open-loop load; LB_ENV_FILE changes and SIGHUP: new
workers take over the slots' sockets, the old ones drain and exit, every request succeeds.
A file that does not validate keeps the old workers, with one log line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lb.config import ConfigError, effective_environ, load_settings
from lb.upstream.backend import Outcome
from lb.upstream.pool import Pool
from tests.lb.conftest import FakeBackend, LbProcess
from tests.lb.load import open_loop
from tests.lb.test_policy_live import ROOMY, policy_header
from tests.lb.test_workers import all_workers_up


def test_the_env_file_goes_on_top_of_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "lb.env"
    path.write_text("# comment\n\nexport BUCKET_CAPACITY=40\nLB_RATE_RULES='POST /a/=1/1'\n")
    env = effective_environ({"LB_ENV_FILE": str(path), "BUCKET_CAPACITY": "20", "X": "y"})
    assert env["BUCKET_CAPACITY"] == "40" and env["X"] == "y"
    assert load_settings(env).rate_rules[0].name == "POST /a/"
    path.write_text("BUCKET_CAPACITY\n")
    with pytest.raises(ConfigError, match=r"LB_ENV_FILE.*line 1 is not KEY=VALUE"):
        effective_environ({"LB_ENV_FILE": str(path)})
    with pytest.raises(ConfigError, match="LB_ENV_FILE"):
        effective_environ({"LB_ENV_FILE": str(tmp_path / "missing.env")})


def test_the_backend_set_changes_live_and_kept_backends_keep_their_state() -> None:
    def pool_of(*ports: int) -> Pool:
        urls = ",".join(f"http://127.0.0.1:{p}" for p in ports)
        return Pool.from_settings(load_settings({"LB_BACKENDS": urls, "LB_SEED": "1"}))

    pool = pool_of(9001, 9002)
    kept = pool.get("127.0.0.1:9001")
    assert kept is not None
    kept.drained = True
    busy = pool.pick()  # in flight on 9002 while 9002 goes away
    assert busy is not None and busy.name == "127.0.0.1:9002"
    added, removed = pool.set_backends(pool_of(9001, 9003).backends)
    assert (added, removed) == (["127.0.0.1:9003"], ["127.0.0.1:9002"])
    assert pool.get("127.0.0.1:9001") is kept and kept.drained  # same object, same state
    assert [b.name for b in pool.backends] == ["127.0.0.1:9001", "127.0.0.1:9003"]
    pool.finish(busy, Outcome.OK)  # the request on the removed backend ends normally
    assert pool.in_flight == 0
    assert pool.pick().name == "127.0.0.1:9003"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        pool.set_backends([])


pytestmark = [pytest.mark.processes, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose: only its master has not reaped it yet
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sighup_with_a_changed_env_file_under_load_loses_nothing(
    tmp_path: Path,
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    backends = fake_backends(2)
    env_file = tmp_path / "lb.env"
    env_file.write_text("# the SRE's file\nBUCKET_CAPACITY=100000\n")
    lb = lb_process(
        {
            **ROOMY,
            "LB_BACKENDS": ",".join(b.url for b in backends),
            "LB_WORKERS": "2",
            "LB_ENV_FILE": str(env_file),
            "LB_DRAIN_TIMEOUT": "10",
        }
    )
    old = asyncio.run(all_workers_up(lb, 2))
    assert len(old) == 2
    signalled: dict[str, float] = {}

    async def scenario() -> list:
        # a quarter of the requests take 0.4 s at the backend: some are in flight at the switch
        load = asyncio.create_task(
            open_loop(
                lambda i: f"{lb.url}/r/{i}" + ("?sleep=0.4" if i % 4 == 0 else ""),
                rate=100,
                seconds=8,
            )
        )
        await asyncio.sleep(2.0)
        env_file.write_text("BUCKET_CAPACITY=90000\n")
        signalled["at"] = time.monotonic()
        os.kill(lb.pid, signal.SIGHUP)

        def switched() -> bool:
            serving = {w["pid"] for w in lb.status()["per_worker"] if not w["draining"]}
            return len(serving) == 2 and not serving & old

        assert await asyncio.to_thread(wait_for, switched, 15)
        signalled["switched"] = time.monotonic()
        return await load

    results = asyncio.run(scenario())
    failed = [(r.index, r.error or r.status) for r in results if r.failed]
    assert failed == []  # no refused connection, no reset, no 5xx
    assert {r.status for r in results} == {200}
    assert {r.policy for r in results if r.sent < signalled["at"]} == {policy_header(100000)}
    # once the new workers serve (that takes a worker's start), only they answer
    late = [r for r in results if r.sent > signalled["switched"] + 0.5]
    assert late and {r.policy for r in late} == {policy_header(90000)}
    new = {w["pid"] for w in lb.status()["per_worker"] if not w["draining"]}
    assert len(new) == 2 and not new & old
    # the old workers finished their requests and exited
    assert wait_for(lambda: not any(alive(pid) for pid in old), within=15)
    assert "SIGHUP: reloaded" in lb.process.log()


def test_a_bad_env_file_keeps_the_old_workers_with_one_line(
    tmp_path: Path,
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    (backend,) = fake_backends(1)
    env_file = tmp_path / "lb.env"
    env_file.write_text("BUCKET_CAPACITY=100000\n")
    lb = lb_process(
        {**ROOMY, "LB_BACKENDS": backend.url, "LB_WORKERS": "2", "LB_ENV_FILE": str(env_file)}
    )
    before = asyncio.run(all_workers_up(lb, 2))
    env_file.write_text("BUCKET_CAPACITY=lots\n")
    os.kill(lb.pid, signal.SIGHUP)
    assert wait_for(lambda: "SIGHUP: bad configuration" in lb.process.log(), within=10)
    lines = [line for line in lb.process.log().splitlines() if "SIGHUP" in line]
    assert len(lines) == 1 and "BUCKET_CAPACITY='lots'" in lines[0]
    results = asyncio.run(open_loop(lambda i: f"{lb.url}/r/{i}", rate=50, seconds=1))
    assert {r.status for r in results} == {200}
    assert {r.policy for r in results} == {policy_header(100000)}
    assert {w["pid"] for w in lb.status()["per_worker"]} == before
    # a worker that cannot start (here: it dies at once) also keeps the old ones
    env_file.write_text("BUCKET_CAPACITY=90000\nPYTHONPATH=" + str(tmp_path) + "\n")
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nif '--worker' in sys.orig_argv:\n    os._exit(3)\n"
    )
    os.kill(lb.pid, signal.SIGHUP)
    assert wait_for(lambda: "did not come up" in lb.process.log(), within=20)
    results = asyncio.run(open_loop(lambda i: f"{lb.url}/r/{i}", rate=50, seconds=1))
    assert {r.status for r in results} == {200}
    assert {r.policy for r in results} == {policy_header(100000)}
    assert {w["pid"] for w in lb.status()["per_worker"]} == before
