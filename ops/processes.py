"""Child processes: the one wrapper that starts them with a log file, and stopping one by its
own PID without orphaning its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from ops.servers import wait_for_port


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children first), read from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in task.read_text().split()]
                found.extend(kids)
                todo.extend(kids)
    return found


def terminate(popen: subprocess.Popen[bytes], deadline: float) -> int:
    """SIGTERM `popen`, SIGKILL it if it outlives `deadline` seconds; its exit code.

    A process killed that way cannot stop its own children (a gunicorn master still waiting
    for a stuck worker, say): they would live on with PID 1 as parent. So they are
    collected first and killed with it.
    """
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        return popen.wait(deadline)
    except subprocess.TimeoutExpired:
        family = descendants(popen.pid)
        popen.kill()
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return popen.wait(5)


ROOT = Path(__file__).resolve().parents[1]


class Process:
    """One child process of ours: output appended to `log_path`, stopped by its own PID.

    The one wrapper `ops up`, the benches and the tests start children through. `env` is laid
    over this process's environment, unless `inherit_env=False` (then it is the whole
    environment: `ops up` builds it complete, with some variables deliberately removed).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        full_env = dict(os.environ) if inherit_env else {}
        if inherit_env:
            full_env.setdefault("PYTHONUNBUFFERED", "1")
        full_env.update(env or {})
        self.env = full_env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, "process not started"
        return self.popen.pid

    def start(self) -> Process:
        """Start it (again, after it stopped: a restart appends to the same log)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exited(self) -> str | None:
        """None while it runs; else one line saying it exited, with its log's tail."""
        if self.alive():
            return None
        code = self.popen.returncode if self.popen is not None else None
        return f"{self.argv[:3]} exited (code {code}):\n{self.log()}"

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        """Block until `port` accepts connections; RuntimeError as soon as the process dies."""
        try:
            wait_for_port(port, timeout=timeout, what=str(self.argv[:3]), died=self.exited)
        except TimeoutError:
            raise TimeoutError(f"{self.argv[:3]} did not listen on {port}:\n{self.log()}") from None

    def wait_http(self, url: str, timeout: float = 20.0, status: int = 200) -> None:
        """Block until GET url answers `status` (the process must stay alive meanwhile)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if (why := self.exited()) is not None:
                raise RuntimeError(why)
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
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


def python(*args: str) -> list[str]:
    """argv running this interpreter (the project's virtualenv)."""
    return [sys.executable, *args]
