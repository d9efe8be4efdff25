"""Fixtures for lb tests: fake backends and `python -m lb` processes on free ports."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.processes import Process, python


class FakeBackend:
    """One `tests.support.fake_backend` process; restartable on the same port."""

    def __init__(self, name: str, port: int, log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.record_path = log_dir / f"{name}.record"
        self.log_path = log_dir / f"{name}.log"
        self.process: Process | None = None

    def start(self) -> FakeBackend:
        argv = python(
            "-m",
            "tests.support.fake_backend",
            "--port",
            str(self.port),
            "--name",
            self.name,
            "--record",
            str(self.record_path),
        )
        self.process = Process(argv, log_path=self.log_path).start()
        self.process.wait_http(f"{self.url}/healthz")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self) -> FakeBackend:
        self.stop()
        return self.start()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def records(self) -> list[str]:
        """The recorded request lines, "METHOD PATH X-Request-ID"."""
        try:
            return self.record_path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_control/stats", timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def set_health(self, status: int) -> None:
        req = urllib.request.Request(
            f"{self.url}/_control/health?status={status}", method="POST", data=b""
        )
        with urllib.request.urlopen(req, timeout=5):
            pass


class LbProcess:
    """A running `python -m lb`: public `url`, `admin_url`, `pid`, `process`."""

    def __init__(self, process: Process, port: int, admin_port: int, env: dict[str, str]) -> None:
        self.process = process
        self.port = port
        self.admin_port = admin_port
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.env = env

    @property
    def pid(self) -> int:
        return self.process.pid

    def status(self) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.admin_url}/status", headers={"Accept": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.admin_url}/metrics", timeout=5) as resp:
            return resp.read().decode()  # type: ignore[no-any-return]


def start_lb(env: Mapping[str, str] | None, log: Path, *, wait: bool = True) -> LbProcess:
    """Start `python -m lb` with `env` over test defaults (free ports, fast health checks)."""
    full = {
        "LB_LISTEN": f"127.0.0.1:{free_port()}",
        "LB_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        "LB_HEALTH_INTERVAL": "0.5",
        "LB_LOG_LEVEL": "WARNING",
        "LB_ACCESS_LOG": "0",
        "LB_SEED": "7",
    }
    full.update(env or {})
    port = int(full["LB_LISTEN"].rsplit(":", 1)[1])
    admin_port = int(full["LB_ADMIN_LISTEN"].rsplit(":", 1)[1])
    process = Process(python("-m", "lb"), log_path=log, env=full).start()
    lb = LbProcess(process, port, admin_port, full)
    if wait:
        process.wait_http(f"{lb.admin_url}/healthz")
        process.wait_port(port)
    return lb


@pytest.fixture
def fake_backends(tmp_path: Path) -> Iterator[Callable[[int], list[FakeBackend]]]:
    """Factory: `fake_backends(n)` starts n fake backends b0..b(n-1); all stopped at teardown."""
    started: list[FakeBackend] = []

    def start(n: int) -> list[FakeBackend]:
        group = [FakeBackend(f"b{len(started) + i}", free_port(), tmp_path) for i in range(n)]
        for backend in group:
            started.append(backend)
            backend.start()
        return group

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
def lb_process(tmp_path: Path) -> Iterator[Callable[..., LbProcess]]:
    """Factory: `lb_process(env)` starts `python -m lb` with `env` on top of test defaults.

    LB_LISTEN / LB_ADMIN_LISTEN get free ports unless given; waits for the admin /healthz
    and the public port. Every lb started is stopped at teardown.
    """
    started: list[LbProcess] = []

    def start(env: Mapping[str, str] | None = None, *, wait: bool = True) -> LbProcess:
        lb = start_lb(env, tmp_path / f"lb-{len(started)}.log", wait=wait)
        started.append(lb)
        return lb

    yield start
    for lb in started:
        lb.process.stop(timeout=15)
