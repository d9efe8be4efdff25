"""Flow control shared by the client and upstream protocols: read watermarks, write pauses."""

from __future__ import annotations

import asyncio
from typing import Final

# Buffered body bytes (either direction) at which reading from the sending side pauses,
# and below which it resumes: a slow reader costs the lb at most this much per connection.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


class WriteFlow:
    """Mixin for an asyncio.Protocol: the transport's pause/resume calls, and a wait for them.

    The protocol initialises `_write_paused`, `_drain_waiter` and `closed`, and calls
    `_release_drain()` from `connection_lost` so no writer waits on a dead connection.
    """

    closed: bool
    _write_paused: bool
    _drain_waiter: asyncio.Future[None] | None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drain()

    def _release_drain(self) -> None:
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def _wait_writable(self, loop: asyncio.AbstractEventLoop) -> None:
        """Return once the peer reads again, or the connection is closed."""
        while self._write_paused and not self.closed:
            self._drain_waiter = loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
