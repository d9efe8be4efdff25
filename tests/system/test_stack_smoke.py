"""CI end to end: `python -m ops up` on embedded defaults, the smoke load profile through the lb,
the invariant audit afterwards, and Ctrl-C stopping exactly what was started.

The tests share one stack and one run of the smoke load (module fixtures), so each can run alone;
the last two (a replica killed, Ctrl-C) change the stack and stay last in the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.locust import LocustRun, run_locust
from tests.support.net import free_port, free_run
from tests.support.processes import ROOT, Process, python

pytestmark = [pytest.mark.processes, pytest.mark.slow]

REPLICAS = 2
STARTUP_TIMEOUT = 180.0


def get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def audit(var: Path) -> subprocess.CompletedProcess[str]:
    """`python -m loadtest.verify` on the stores of the stack in `var` (its stack.env)."""
    env = {**os.environ, **env_file(var / "stack.env")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "loadtest.verify"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Stack:
    def __init__(self, var: Path) -> None:
        self.var = var
        self.port, self.admin_port = free_port(), free_port()
        self.backend_base = free_run(REPLICAS)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        env = {
            # embedded defaults: nothing configured
            "DATABASE_URL": "",
            "SHARD_URLS": "",
            "REDIS_URL": "",
            "DJANGO_SETTINGS_MODULE": "",
            # Locust presents one client address per simulated user
            "LB_TRUSTED_PROXIES": "127.0.0.1/32",
        }
        self.process = Process(
            python(
                "-m",
                "ops",
                "up",
                "--var",
                str(var),
                "--replicas",
                str(REPLICAS),
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--backend-base-port",
                str(self.backend_base),
            ),
            log_path=var / "ops-up.log",
            env=env,
        )

    def pids(self) -> dict[str, int]:
        return json.loads((self.var / "stack.json").read_text())["pids"]


@contextlib.contextmanager
def running_stack(var: Path) -> Iterator[Stack]:
    """`ops up` in `var` until the block ends (then Ctrl-C), once it serves and has written
    stack.json."""
    os.chmod(var, 0o755)
    running = Stack(var)
    running.process.start()
    try:
        running.process.wait_http(f"{running.url}/api/tours/", timeout=STARTUP_TIMEOUT)
        deadline = time.monotonic() + 30
        while not (var / "stack.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield running
    finally:
        running.process.signal(signal.SIGINT)
        running.process.stop(timeout=40)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def test_ops_up_serves_demo_tours_through_the_lb(stack):
    status, headers, body = get(f"{stack.url}/api/tours/")
    assert status == 200
    page = json.loads(body)
    assert page["count"] >= 3 and page["results"], page
    assert {"id", "name", "price", "seats_available"} <= set(page["results"][0])
    # it came through our lb: admission headers and a request id
    lowered = {k.lower() for k in headers}
    assert "ratelimit" in lowered and "x-request-id" in lowered
    # the hot tours the load test books are there
    status, _, body = get(f"{stack.url}/api/tours/?search=Black%20Friday")
    assert status == 200 and json.loads(body)["count"] >= 1
    # the summary told the operator where things are
    log = stack.process.log(20000)
    for needle in (stack.url, f"{stack.admin}/status", f"{stack.admin}/metrics", "/api/docs/"):
        assert needle in log
    assert "staff login" in log
    # one lb and every replica, each a live process
    pids = stack.pids()
    assert set(pids) == {"lb", *(f"backend-{i + 1}" for i in range(REPLICAS))}
    assert all(alive(pid) for pid in pids.values())
    status, _, body = get(f"{stack.admin}/metrics")
    assert status == 200 and b"lb_requests" in body


@pytest.fixture(scope="module")
def smoke_load(stack, tmp_path_factory: pytest.TempPathFactory) -> LocustRun:
    """The smoke profile through the lb, once per module: whichever test asks first runs it,
    so the audit below never depends on another test having run before it."""
    return run_locust(stack.url, "smoke", tmp_path_factory.mktemp("smoke"))


def test_smoke_profile_passes_through_the_stack(smoke_load: LocustRun) -> None:
    assert smoke_load.returncode == 0, smoke_load.output[-6000:]
    assert "PASSED" in smoke_load.output
    assert smoke_load.html.stat().st_size > 1000
    rows = dict(smoke_load.rows)
    total = rows.pop("Aggregated")
    assert int(total["Request Count"]) >= 200, rows.keys()
    booked = [
        int(row["Request Count"])
        for name, row in rows.items()
        if name.startswith("bookings: create")
    ]
    assert sum(booked) >= 5 and smoke_load.count("bookings: pay") >= 1, sorted(rows)
    assert smoke_load.count("tours: detail") >= 20


def test_invariants_hold_after_the_load(stack, smoke_load: LocustRun) -> None:
    # the audit has something to audit: the load booked and paid through the stack
    assert smoke_load.count("bookings: pay") >= 1, sorted(smoke_load.rows)
    result = audit(stack.var)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # the stack ran expire_holds on its own meanwhile (every 30 s), and it succeeded
    assert (stack.var / "log" / "expire_holds.log").exists()
    assert "expire_holds failed" not in stack.process.log(20000)


def test_a_replica_that_dies_is_reported_and_restarted(stack):
    before = stack.pids()
    os.kill(before["backend-1"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = stack.pids()
        if now.get("backend-1") not in (None, before["backend-1"]):
            break
        time.sleep(0.2)
    else:
        pytest.fail("backend-1 was not restarted:\n" + stack.process.log())
    log = stack.process.log(20000)
    assert "backend-1" in log and "DIED" in log and "restarted backend-1" in log
    # meanwhile the public endpoint kept answering through the other replica
    status, _, _ = get(f"{stack.url}/api/tours/")
    assert status == 200
    assert {k: v for k, v in now.items() if k != "backend-1"} == {
        k: v for k, v in before.items() if k != "backend-1"
    }


def test_ctrl_c_stops_exactly_what_ops_up_started(stack):
    pids = stack.pids()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stack.process.signal(signal.SIGINT)
        stack.process.popen.wait(45)
        assert stack.process.popen.returncode == 0, stack.process.log()
        assert not [name for name, pid in pids.items() if alive(pid)]
        assert bystander.poll() is None
        for port in (stack.port, stack.admin_port, stack.backend_base):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))  # free again
        assert "ops: stopped" in stack.process.log()
    finally:
        bystander.kill()
        bystander.wait()
