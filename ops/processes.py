"""Stopping a child process without orphaning its own children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


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
