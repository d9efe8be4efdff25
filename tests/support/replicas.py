"""Replica fixtures for backend tests: gunicorn replicas (ops/replicas.py) on free ports.

`replicas(n=1, env=None, extra_env=None)` (per test; `module_replicas` per module) starts n
replicas on `backend_env` (or `env`), waits for /healthz and returns their base URLs;
`replicas.processes` holds the `Process`es. All are stopped (by PID) at teardown.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.processes import Process
from ops.replicas import start_replicas
from ops.servers import free_port


class ReplicaStarter:
    """Starts gunicorn replicas; `stop_all()` stops exactly the ones it started."""

    def __init__(self, log_dir: Path, default_env: Callable[[], dict[str, str]]) -> None:
        self.log_dir = log_dir
        self.default_env = default_env
        self.processes: list[Process] = []

    def __call__(
        self,
        n: int = 1,
        env: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> list[str]:
        env = dict(env if env is not None else self.default_env())
        env.update(extra_env or {})
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        ports = [free_port() for _ in range(n)]
        return start_replicas(env, ports, self.log_dir, self.processes)

    def stop_all(self) -> None:
        # SIGINT is gunicorn's quick shutdown: tests have no requests in flight to drain, and
        # a graceful stop would wait for idle keep-alive connections of the test clients
        for proc in self.processes:
            proc.signal(signal.SIGINT)
        for proc in self.processes:
            proc.stop()


@pytest.fixture
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReplicaStarter]:
    starter = ReplicaStarter(tmp_path / "logs", lambda: request.getfixturevalue("backend_env"))
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def module_replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaStarter]:
    starter = ReplicaStarter(
        tmp_path_factory.mktemp("logs"), lambda: request.getfixturevalue("module_backend_env")
    )
    yield starter
    starter.stop_all()
