"""Runs the stack's children: start, wait until ready, restart the dead, stop by PID in reverse."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.processes import ROOT, Process, terminate
from ops.stack import Service

__all__ = ["ROOT", "Child", "StackError", "Supervisor", "spawn", "terminate"]


class StackError(Exception):
    """The stack could not start: one line saying what and where to look."""


def backoff(restarts: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before restarting a child that died `restarts` times already (doubling, capped)."""
    return float(min(cap, base * 2 ** max(0, restarts)))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


@dataclass
class Child:
    """One started service and its restart bookkeeping."""

    service: Service
    process: Process
    restarts: int = 0
    restart_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        assert self.process.popen is not None
        return self.process.popen

    @property
    def log_path(self) -> Path:
        return self.process.log_path


def service_process(service: Service, log_dir: Path) -> Process:
    """The child of a service: exactly the plan's environment, its log under `log_dir`."""
    return Process(
        service.argv, log_path=log_dir / service.log_name, env=service.env, inherit_env=False
    )


def spawn(argv: tuple[str, ...], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start one process (with exactly `env`) with its output appended to `log_path`."""
    popen = Process(argv, log_path=log_path, env=env, inherit_env=False).start().popen
    assert popen is not None
    return popen


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Supervisor:
    """Owns every long-running child of the stack; the only place that signals them."""

    def __init__(self, log_dir: Path, say: Callable[[str], None]) -> None:
        self.log_dir = log_dir
        self.say = say
        self.children: list[Child] = []

    def start(self, service: Service) -> Child:
        child = Child(service, service_process(service, self.log_dir).start())
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, timeout: float, should_stop: Callable[[], bool]) -> None:
        """Block until the child's ready URL answers 2xx; StackError if it dies or times out."""
        deadline = time.monotonic() + timeout
        while not http_ok(child.service.ready_url):
            if should_stop():
                return
            if child.popen.poll() is not None:
                raise StackError(
                    f"{child.service.name} exited with code {child.popen.returncode} while starting;"
                    f" its log ({child.log_path}):\n{log_tail(child.log_path)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{child.service.name} not ready at {child.service.ready_url} after {timeout:.0f}"
                    f" s; its log ({child.log_path}):\n{log_tail(child.log_path)}"
                )
            time.sleep(0.2)

    def check(self, now: float | None = None) -> None:
        """Report children that died and restart them after a backoff."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.process.start()
                    child.restart_at, child.started_at = None, now
                    self.say(f"ops: restarted {child.service.name} (pid {child.pid})")
                continue
            code = child.popen.poll()
            if code is None:
                # a child that stayed up for a minute has earned a fresh backoff
                if child.restarts and now - child.started_at > 60:
                    child.restarts = 0
                continue
            delay = backoff(child.restarts)
            child.restarts += 1
            child.restart_at = now + delay
            self.say(
                f"\nops: !!! {child.service.name} (pid {child.pid}) DIED with exit code {code};"
                f" restarting in {delay:.0f} s. Last lines of {child.log_path}:\n"
                f"{log_tail(child.log_path)}\n"
            )

    def pids(self) -> dict[str, int]:
        return {c.service.name: c.pid for c in self.children if c.popen.poll() is None}

    def stop(self, deadline: float = 10.0) -> None:
        """Stop every child this supervisor started, newest first (the lb before the
        replicas, so it drains while they still answer), each by its own PID."""
        for child in reversed(self.children):
            child.process.stop(deadline)
        self.children.clear()
