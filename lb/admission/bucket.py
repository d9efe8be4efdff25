"""Leaky-bucket meter math (pure): level, leak, admit-or-reject, and what to tell the client."""

from __future__ import annotations

import math
from dataclasses import dataclass

# float slack so that a level of 4.999999999 + 1 still fits a capacity of 5
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check against one bucket."""

    allowed: bool
    # requests that would still be admitted right now (after this one, if admitted)
    remaining: int
    # whole seconds until the bucket has drained empty, i.e. the whole quota is back
    # (the `t` of the draft-11 RateLimit field; 0 when the bucket is empty)
    reset: int
    # seconds the client must wait before a retry can be admitted (0.0 when allowed)
    wait: float

    @property
    def retry_after(self) -> int:
        """Retry-After: the ceiling of the real wait, at least 1 second."""
        return max(1, math.ceil(self.wait - EPSILON))


def leaked(level: float, elapsed: float, rate: float) -> float:
    """The level after `elapsed` seconds of draining at `rate` units per second."""
    return max(0.0, level - max(0.0, elapsed) * rate)


def fits(level: float, capacity: int) -> bool:
    """Whether one more unit fits on top of `level` without exceeding `capacity`."""
    return level + 1.0 <= capacity + EPSILON


def decide(allowed: bool, level: float, capacity: int, rate: float) -> Decision:
    """Describe a check, given whether it was admitted and the level it left behind.

    `level` is the bucket level after the check: raised by one when admitted,
    unchanged (just drained) when rejected. The Redis script returns exactly these two
    values, so both limiters describe their results through this one function.
    """
    remaining = max(0, math.floor(capacity - level + EPSILON))
    # the time until the level has drained enough for one more unit
    need = max(0.0, level + 1.0 - capacity) / rate
    reset = max(0, math.ceil(level / rate - EPSILON))
    return Decision(
        allowed=allowed, remaining=remaining, reset=reset, wait=0.0 if allowed else need
    )


def drain_seconds(level: float, rate: float) -> float:
    """How long a bucket at `level` takes to drain empty: its state can be forgotten then."""
    return level / rate


@dataclass(slots=True)
class Meter:
    """One bucket's state: the level at time `updated`, in the owner's clock."""

    level: float = 0.0
    updated: float = 0.0

    def check(self, now: float, capacity: int, rate: float) -> Decision:
        """Admit one request if it fits (the level rises by one); a reject changes nothing."""
        level = leaked(self.level, now - self.updated, rate)
        if fits(level, capacity):
            self.level, self.updated = level + 1.0, now
            return decide(True, self.level, capacity, rate)
        return decide(False, level, capacity, rate)

    def empty_at(self, rate: float) -> float:
        return self.updated + drain_seconds(self.level, rate)
