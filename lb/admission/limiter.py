"""The in-process limiter: leaky buckets in a dict, on an injected monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from lb.admission.bucket import Decision, Meter
from lb.admission.rules import Rule

Clock = Callable[[], float]


class Store(Protocol):
    """Where bucket state lives: in this process, or in Redis shared by every lb process.

    `check` returns None when no decision can be made (the shared store is unreachable
    and the failure policy is `open` or `closed`); `mode` says which is in force.
    """

    @property
    def mode(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self, rule: Rule, client: str) -> Decision | None: ...


class LocalLimiter:
    """Buckets in this process only. Serves when REDIS_URL is unset, and as the fallback.

    Drained buckets are forgotten by a sweep that runs at most every `sweep_every`
    seconds, so memory follows the number of clients active in the last few windows.
    """

    mode = "local"

    def __init__(self, clock: Clock = time.monotonic, *, sweep_every: float = 10.0) -> None:
        self._clock = clock
        # rule name -> (rule, client key -> meter)
        self._buckets: dict[str, tuple[Rule, dict[str, Meter]]] = {}
        self._sweep_every = sweep_every
        self._next_sweep = clock() + sweep_every

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._buckets.clear()

    async def check(self, rule: Rule, client: str) -> Decision:
        return self.check_now(rule, client)

    def check_now(self, rule: Rule, client: str) -> Decision:
        """The synchronous check: no I/O, so callers on the hot path need not await."""
        now = self._clock()
        if now >= self._next_sweep:
            self.sweep(now)
        entry = self._buckets.get(rule.name)
        if entry is None or entry[0] is not rule:
            # new, or reshaped by a policy change: the levels stay, the sweep uses the new rate
            entry = self._buckets[rule.name] = (rule, {} if entry is None else entry[1])
        meters = entry[1]
        meter = meters.get(client)
        if meter is None:
            meter = meters[client] = Meter(0.0, now)
        return meter.check(now, rule.capacity, rule.rate)

    def sweep(self, now: float) -> int:
        """Forget buckets that have drained empty; return how many were dropped."""
        self._next_sweep = now + self._sweep_every
        dropped = 0
        for rule, meters in self._buckets.values():
            drained = [c for c, m in meters.items() if m.empty_at(rule.rate) <= now]
            for client in drained:
                del meters[client]
            dropped += len(drained)
        return dropped

    def __len__(self) -> int:
        return sum(len(meters) for _, meters in self._buckets.values())
