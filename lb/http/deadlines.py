"""Coarse deadlines for the hot path: one periodic sweep instead of a timer per request.

Arming and disarming a deadline is a set insertion; the sweep (every `resolution` s)
expires what is due, so a timeout fires at most `resolution` late.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class Expirable(Protocol):
    deadline: float

    def expire(self) -> None: ...


class Deadlines:
    """The set of armed deadlines of one event loop, and the task that sweeps it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = 0.1) -> None:
        self.loop = loop
        self.resolution = resolution
        self._armed: set[Expirable] = set()
        self._task: asyncio.Task[None] | None = None

    def arm(self, item: Expirable, seconds: float) -> None:
        item.deadline = self.loop.time() + seconds
        self._armed.add(item)
        if self._task is None:
            self._task = self.loop.create_task(self._sweep())

    def disarm(self, item: Expirable) -> None:
        self._armed.discard(item)

    def sweep(self) -> None:
        now = self.loop.time()
        due = [item for item in self._armed if item.deadline <= now]
        for item in due:
            self._armed.discard(item)
            item.expire()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.resolution)
            self.sweep()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
