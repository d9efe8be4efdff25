"""Backend choice: least outstanding requests over two random choices (p2c), or round robin."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from lb.upstream.backend import Backend

Eligible = Callable[[Backend], bool]


class Balancer(Protocol):
    def choose(self, backends: Sequence[Backend], eligible: Eligible) -> Backend | None:
        """One eligible backend of `backends`, or None if none is eligible. O(len(backends))."""
        ...


class PowerOfTwoChoices:
    """Least outstanding requests with power of two choices: sample two distinct eligible
    backends at random and take the one with fewer requests in flight; on a tie the one
    picked least recently, which keeps shares even when the pool is idle."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, backends: Sequence[Backend], eligible: Eligible) -> Backend | None:
        candidates = [b for b in backends if eligible(b)]
        n = len(candidates)
        if n <= 1:
            return candidates[0] if n else None
        rand = self._rng.random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        if a.outstanding != b.outstanding:
            return a if a.outstanding < b.outstanding else b
        return a if a.last_pick <= b.last_pick else b


class RoundRobin:
    """Each eligible backend in turn; ineligible ones are skipped without losing the order."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def choose(self, backends: Sequence[Backend], eligible: Eligible) -> Backend | None:
        n = len(backends)
        start = self._next
        for k in range(n):
            index = (start + k) % n
            backend = backends[index]
            if eligible(backend):
                self._next = index + 1
                return backend
        return None


def make_balancer(algorithm: str, rng: random.Random) -> Balancer:
    """The balancer named by LB_ALGORITHM ("p2c" or "round_robin")."""
    if algorithm == "round_robin":
        return RoundRobin()
    if algorithm == "p2c":
        return PowerOfTwoChoices(rng)
    raise ValueError(f"unknown balancing algorithm {algorithm!r}")
