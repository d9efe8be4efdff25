"""Per-backend circuit breaker: closed -> open on a failure ratio -> half-open probe -> closed."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class FailureWindow:
    """Requests and failures over the last `window` seconds, in `slots` fixed time slots.

    Recording and reading are O(slots) with no allocation; old slots expire lazily.
    """

    __slots__ = ("_epochs", "_failures", "_requests", "_width")

    def __init__(self, window: float, slots: int = 10) -> None:
        self._width = window / slots
        self._epochs = [-1] * slots
        self._requests = [0] * slots
        self._failures = [0] * slots

    def add(self, now: float, failure: bool) -> None:
        epoch = math.floor(now / self._width)
        i = epoch % len(self._epochs)
        if self._epochs[i] != epoch:
            self._epochs[i], self._requests[i], self._failures[i] = epoch, 0, 0
        self._requests[i] += 1
        if failure:
            self._failures[i] += 1

    def totals(self, now: float) -> tuple[int, int]:
        """(requests, failures) in the window ending at `now`."""
        oldest = math.floor(now / self._width) - len(self._epochs) + 1
        requests = failures = 0
        for i, epoch in enumerate(self._epochs):
            if epoch >= oldest:
                requests += self._requests[i]
                failures += self._failures[i]
        return requests, failures

    def clear(self) -> None:
        for i in range(len(self._epochs)):
            self._epochs[i] = -1


class Breaker:
    """Closed: everything passes and results are counted over a sliding window; when at least
    `min_requests` results are in the window and the failure share reaches `failure_ratio`, it
    opens. Open: nothing passes for `open_seconds`; then half-open: exactly one probe passes
    (`acquire`), its success closes the breaker, its failure opens it again.

    A `failure_ratio` of 0 disables the breaker. `on_change(state)` is called on every
    transition, including the lazy open -> half-open one.
    """

    __slots__ = (
        "_clock",
        "_on_change",
        "_opened_at",
        "_probe_taken",
        "_state",
        "_window",
        "failure_ratio",
        "min_requests",
        "open_seconds",
    )

    def __init__(
        self,
        *,
        clock: Clock,
        failure_ratio: float,
        min_requests: int,
        window: float,
        open_seconds: float,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self._clock = clock
        self.failure_ratio = failure_ratio
        self.min_requests = min_requests
        self.open_seconds = open_seconds
        self._window = FailureWindow(window)
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_taken = False
        self._on_change = on_change

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() >= self._opened_at + self.open_seconds
        ):
            self._probe_taken = False
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def available(self) -> bool:
        """Would a request be let through now? (Does not take the half-open probe permit.)"""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probe_taken

    def acquire(self) -> bool:
        """Let one request through: in half-open this takes the single probe permit.
        Returns False if nothing may pass now."""
        if not self.available():
            return False
        if self._state is BreakerState.HALF_OPEN:
            self._probe_taken = True
        return True

    def record(self, failure: bool) -> None:
        """The result of a request that was let through."""
        state = self.state
        if state is BreakerState.CLOSED:
            if self.failure_ratio <= 0:
                return
            now = self._clock()
            self._window.add(now, failure)
            if failure:
                requests, failures = self._window.totals(now)
                if requests >= self.min_requests and failures >= self.failure_ratio * requests:
                    self._open()
        elif state is BreakerState.HALF_OPEN and self._probe_taken:
            # The first result after the permit was taken is the probe's (requests sent
            # before the breaker opened have long finished: they are older than open_seconds).
            if failure:
                self._open()
            else:
                self._window.clear()
                self._set(BreakerState.CLOSED)
        # open: late results of requests sent before opening change nothing

    def release(self) -> None:
        """The request let through ended without a verdict (client went away): in half-open
        the probe permit becomes free again."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_taken = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_taken = False
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        changed = state is not self._state
        self._state = state
        if changed and self._on_change is not None:
            self._on_change(state)
