"""Request coalescing: one upstream fetch per key at a time; the others wait for its result.

As nginx's `proxy_cache_lock`: waiters give up after `timeout` seconds and go to a backend on
their own. Unlike it, a key whose answer proved uncacheable is marked (hit-for-miss, as
Varnish) so later requests for it do not queue behind each other.
"""

from __future__ import annotations

import asyncio
import enum

from lb.cache.store import Entry


class Landing(enum.Enum):
    """How a fetch ended, as its waiters see it."""

    STORED = "stored"  # a new entry: waiters are answered from it
    STALE = "stale"  # the backends failed and a stale entry answered: waiters get it too
    PASS = "pass"  # the answer may not be cached: waiters go to a backend in parallel
    RETRY = "retry"  # the fetch was cut short (client gone, purged meanwhile): ask again


Result = tuple[Landing, Entry | None]


class Flight:
    """One fetch in progress for a key."""

    __slots__ = ("done", "key", "waiters")

    def __init__(self, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.done: asyncio.Future[Result] = loop.create_future()
        self.waiters = 0


class Flights:
    """The fetches in progress, by key."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self._flights: dict[str, Flight] = {}
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> Flight | None:
        return self._flights.get(key)

    def lead(self, key: str) -> Flight | None:
        """Start a fetch for `key`; None when one is already under way."""
        if key in self._flights:
            return None
        flight = self._flights[key] = Flight(key, self.loop)
        return flight

    async def wait(self, flight: Flight) -> Result | None:
        """The fetch's result, or None after the timeout (then fetch on your own)."""
        flight.waiters += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(flight.done)
        except TimeoutError:
            self.timeouts += 1
            return None
        finally:
            flight.waiters -= 1

    def land(self, flight: Flight, landing: Landing, entry: Entry | None = None) -> None:
        """End the fetch (exactly once; later calls are ignored) and wake its waiters."""
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if not flight.done.done():
            flight.done.set_result((landing, entry))
