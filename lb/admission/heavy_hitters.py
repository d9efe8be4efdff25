"""Bounded traffic records: the most rejected clients (Space-Saving), and recent arrivals."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any


class HeavyHitters:
    """Counts at most `capacity` keys; a new key evicts the smallest and inherits its count.

    Space-Saving (Metwally et al.) guarantees that every key seen more than
    total/capacity times is in the list, and a listed count over-estimates the true one
    by at most the count it inherited. Memory stays fixed however many clients a flood
    brings, which is why clients never become Prometheus labels.
    """

    def __init__(self, capacity: int = 100) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._counts: dict[str, int] = {}
        self.total = 0

    def add(self, key: str, count: int = 1) -> None:
        self.total += count
        counts = self._counts
        if key in counts:
            counts[key] += count
        elif len(counts) < self.capacity:
            counts[key] = count
        else:
            victim = min(counts, key=counts.__getitem__)
            counts[key] = counts.pop(victim) + count

    def top(self, n: int) -> list[tuple[str, int]]:
        """The `n` keys with the highest counts, highest first (ties by key)."""
        ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        return ranked[: max(0, n)]

    def __len__(self) -> int:
        return len(self._counts)


# second (unix time), method, path, requests, first and last arrival time within the second
Arrival = tuple[int, str, str, int, float, float]


class ArrivalLog:
    """Who sent what in the last `window` seconds, per second: the raw data of a preview.

    Bounded three ways, so a flood of clients or paths cannot grow it: at most `clients`
    clients (the least recently seen is forgotten first), at most `per_client` entries each
    (one entry per second and method+path run, oldest dropped first; the first and last
    arrival of the run place its requests within the second), paths cut to
    `PATH_LIMIT` characters. Light clients never matter to a preview (they fit any sane
    bucket); the heavy ones are the recently and often seen, which is what stays.
    """

    PATH_LIMIT = 128

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        window: float = 300.0,
        clients: int = 256,
        per_client: int = 1024,
    ) -> None:
        self._clock = clock
        self.window = window
        self._max_clients = clients
        self._per_client = per_client
        self._clients: OrderedDict[str, deque[list[Any]]] = OrderedDict()

    def add(self, client: str, method: str, path: str) -> None:
        now = self._clock()
        second = int(now)
        entries = self._clients.get(client)
        if entries is None:
            entries = self._clients[client] = deque(maxlen=self._per_client)
            if len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
            last = entries[-1]
            if last[0] == second and last[1] == method and last[2] == path[: self.PATH_LIMIT]:
                last[3] += 1
                last[5] = now
                return
        entries.append([second, method, path[: self.PATH_LIMIT], 1, now, now])

    def since(self, seconds: float) -> dict[str, list[Arrival]]:
        """Each client's arrivals of the last `seconds` (at most the window), oldest first."""
        start = int(self._clock() - min(seconds, self.window))
        found: dict[str, list[Arrival]] = {}
        for client, entries in self._clients.items():
            recent = [(e[0], e[1], e[2], e[3], e[4], e[5]) for e in entries if e[0] >= start]
            if recent:
                found[client] = recent
        return found

    def __len__(self) -> int:
        return len(self._clients)
