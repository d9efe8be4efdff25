"""Retry policy (when a failed attempt may be re-sent) and the retry budget (how many at once)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from lb.upstream.backend import Outcome

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Outcomes after which the request may have reached the backend and may be re-sent only if
# doing it twice is harmless. Back-pressure (429/503) is deliberately absent: the backend
# answered "slow down", and re-sending elsewhere during a surge multiplies the overload the
# backend is shedding; the client gets the backend's answer with its Retry-After.
_RETRYABLE_AFTER_REACHING: Final = frozenset({Outcome.TIMEOUT, Outcome.RESET, Outcome.SERVER_ERROR})


class RetryPolicy:
    """Decides whether a failed attempt may be re-sent (always to another backend).

    - The request provably never reached a backend (connect failure): any method.
    - Otherwise only after a timeout, a reset or a 500/502/504, and only if the method is
      idempotent (GET, HEAD, OPTIONS, PUT, DELETE) or the request carries Idempotency-Key.
    - Never after a success, back-pressure (429/503) or a client that went away.
    At most `max_retries` re-sends per request; the proxy counts its attempts.
    """

    __slots__ = ("max_retries",)

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries

    def may_retry(
        self, method: str, has_idempotency_key: bool, outcome: Outcome, reached_backend: bool
    ) -> bool:
        if self.max_retries <= 0:
            return False
        if outcome is Outcome.CONNECT_FAILURE or (
            not reached_backend and outcome is not Outcome.CANCELLED and outcome.is_failure
        ):
            return True
        if outcome not in _RETRYABLE_AFTER_REACHING:
            return False
        return has_idempotency_key or method.upper() in IDEMPOTENT_METHODS

    def allows_attempt(self, retries_done: int) -> bool:
        """May one more retry be made after `retries_done` retries?"""
        return retries_done < self.max_retries


class RetryBudget:
    """Envoy's retry budget: a retry may start while, counting it, the retries in progress
    stay <= max(minimum, ratio * active requests). Under overload most requests are live, so
    retries stay a bounded share of traffic instead of multiplying it. Retries of requests
    that never reached a backend are exempt (see `try_acquire`).

    `try_acquire()` before a retry attempt; `release()` exactly once when that attempt ends.
    """

    __slots__ = ("_active_requests", "active", "minimum", "ratio")

    def __init__(self, *, ratio: float, minimum: int, active_requests: Callable[[], int]) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self._active_requests = active_requests
        self.active = 0  # retries in progress

    def limit(self) -> float:
        return max(float(self.minimum), self.ratio * self._active_requests())

    def try_acquire(self, reached_backend: bool = True) -> bool:
        """Start a retry if the budget allows it. A retry of a request that never reached a
        backend (connect failure) is always granted: the failed attempt did no work, so
        re-sending it adds no load, and refusing it would fail a request that two healthy
        replicas could serve. It still counts as active, and `release()` follows it too."""
        if reached_backend and self.active + 1 > self.limit():
            return False
        self.active += 1
        return True

    def release(self) -> None:
        if self.active > 0:
            self.active -= 1

    @contextmanager
    def permit(self, held: bool) -> Iterator[None]:
        """The span of one attempt: a retry's permit (`held`, taken by `try_acquire`) is
        given back when it ends, however it ends. The one place a permit is released."""
        try:
            yield
        finally:
            if held:
                self.release()
