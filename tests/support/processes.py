"""Real child processes for tests: started with a log file, stopped by their own PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from ops.processes import terminate
from tests.support.net import wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class Process:
    """One child process. Output goes to `log_path`; `stop()` signals only this PID."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        self.env = full_env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, "process not started"
        return self.popen.pid

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child's lifetime
        self.popen = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        try:
            wait_for_port(port, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.argv[:3]} did not listen on {port}:\n{self.log()}") from None
        if not self.alive():
            raise RuntimeError(f"{self.argv[:3]} exited:\n{self.log()}")

    def wait_http(self, url: str, timeout: float = 20.0, status: int = 200) -> None:
        """Block until GET url answers `status` (the process must stay alive meanwhile)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.argv[:3]} exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == status:
                        return
                    last = resp.status
            except Exception as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{url} not ready ({last!r}):\n{self.log()}")

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL (with any children it leaves) after `timeout`; the exit code."""
        if self.popen is None:
            return None
        return terminate(self.popen, timeout)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()  # type: ignore[union-attr]
            self.popen.wait(5)  # type: ignore[union-attr]

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


def python(*args: str) -> list[str]:
    """argv running this interpreter (the project's virtualenv)."""
    return [sys.executable, *args]
