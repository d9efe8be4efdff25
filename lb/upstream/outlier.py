"""Passive outlier ejection (Envoy style): consecutive failures eject a backend for a growing time."""

from __future__ import annotations

import math
from collections.abc import Callable

Clock = Callable[[], float]


def max_ejected(ratio: float, backends: int) -> int:
    """How many of `backends` may be ejected at once. Like Envoy, at least one may be
    ejected whenever ejection is enabled at all (`ratio` > 0)."""
    if ratio <= 0 or backends <= 0:
        return 0
    return max(1, math.floor(ratio * backends + 1e-9))


class OutlierDetector:
    """Ejection state of one backend.

    `consecutive_failures` failures in a row (connect failures, timeouts, resets,
    500/502/504) ask for an ejection; the pool grants it unless too many backends are out.
    The n-th ejection lasts `base_ejection * n` seconds, capped at `max_ejection`. Each
    `base_ejection` seconds spent back in rotation forgives one past ejection. When the time
    is up the backend does not return by itself: it returns on its next passed health check
    (`may_return`), so a still-dead backend is not fed live traffic again.
    """

    __slots__ = (
        "_clock",
        "_returned_at",
        "base_ejection",
        "consecutive",
        "consecutive_failures",
        "ejected_until",
        "ejections",
        "max_ejection",
        "reason",
    )

    def __init__(
        self,
        *,
        clock: Clock,
        consecutive_failures: int,
        base_ejection: float,
        max_ejection: float,
    ) -> None:
        self._clock = clock
        self.consecutive_failures = consecutive_failures
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.consecutive = 0
        self.ejections = 0  # the multiplier: past ejections not yet forgiven
        self.ejected_until: float | None = None  # None: in rotation
        self._returned_at: float | None = None
        self.reason = ""

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    def record(self, failure: bool) -> bool:
        """Count one finished request; True when the backend should now be ejected."""
        if not failure:
            self.consecutive = 0
            return False
        self.consecutive += 1
        return not self.ejected and self.consecutive >= self.consecutive_failures

    def eject(self, reason: str) -> float:
        """Take the backend out of rotation; returns the ejection time in seconds."""
        now = self._clock()
        if self.ejections and self._returned_at is not None:
            forgiven = int((now - self._returned_at) // self.base_ejection)
            self.ejections = max(0, self.ejections - forgiven)
        self.ejections += 1
        duration = min(self.base_ejection * self.ejections, self.max_ejection)
        self.ejected_until = now + duration
        self.consecutive = 0
        self.reason = reason
        return duration

    def expired(self) -> bool:
        """Ejected, and the ejection time is over: the next passed health check returns it."""
        return self.ejected_until is not None and self._clock() >= self.ejected_until

    def restore(self) -> None:
        """Back in rotation."""
        self.ejected_until = None
        self.consecutive = 0
        self._returned_at = self._clock()


class ClientSpread:
    """Which clients met a 500 from one backend lately: the evidence that the backend, not
    one client's input, is at fault.

    A 500 is the application failing on a request; a client that sends input the code
    cannot handle can make every one of its own requests a 500 while the backend serves
    everyone else. So a 500 counts toward ejection and the breaker only once at least
    `min_clients` distinct client keys met a 500 on the backend within `window` seconds.
    Gateway failures (connect, reset, timeout, 502, 504) need no such evidence.
    """

    __slots__ = ("_clock", "_seen", "min_clients", "window")

    MAX_KEYS = 1024  # keys remembered per backend: enough to tell "one" from "several"

    def __init__(self, *, clock: Clock, window: float, min_clients: int) -> None:
        self._clock = clock
        self.window = window
        self.min_clients = min_clients
        self._seen: dict[str, float] = {}  # client key -> when it last met a 500

    def record(self, client: str) -> bool:
        """`client` met a 500; True when 500s now count against the backend."""
        now = self._clock()
        seen = self._seen
        seen.pop(client, None)
        seen[client] = now  # insertion order is age order: the oldest come first
        oldest = now - self.window
        for key in list(seen):
            if seen[key] >= oldest and len(seen) <= self.MAX_KEYS:
                break
            del seen[key]
        return len(seen) >= self.min_clients
