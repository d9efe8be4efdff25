"""Quiet logs under fire: repeated warnings of one kind become one line per interval with a count.

The first warning of a kind is written at once; the ones that follow within `interval`
seconds are only counted, and the next write of that kind (or `flush()`, called from the
runtime's periodic tick) says how many were folded into it:

    backend 127.0.0.1:8002 not ejected: 1 already ejected (and 412 more like this in 10 s)

So an overload writes tens of lines, not thousands, and nothing is lost: the counts are there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]
DEFAULT_INTERVAL = 10.0


class _Kind:
    __slots__ = ("args", "folded", "message", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.folded = 0
        self.message = ""
        self.args: tuple[Any, ...] = ()


class LogSummary:
    """Aggregates repeated warnings per kind (any hashable key, e.g. a short name)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Clock = time.monotonic,
        level: int = logging.WARNING,
    ) -> None:
        self._log = logger
        self.interval = interval
        self._clock = clock
        self.level = level
        self._kinds: dict[str, _Kind] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        """Log `message % args` now, or count it if `kind` was logged less than `interval` ago."""
        now = self._clock()
        state = self._kinds.get(kind)
        if state is not None and now - state.since < self.interval:
            state.folded += 1
            state.message, state.args = message, args  # the latest one is the one to show
            return
        folded = state.folded if state is not None else 0
        if folded:
            self._emit(message, args, folded, now - state.since)  # type: ignore[union-attr]
        else:
            self._log.log(self.level, message, *args)
        self._kinds[kind] = _Kind(now)

    def flush(self) -> None:
        """Write the counts of kinds whose interval is over (call it periodically)."""
        now = self._clock()
        for kind, state in list(self._kinds.items()):
            if now - state.since < self.interval:
                continue
            if state.folded:
                self._emit(state.message, state.args, state.folded, now - state.since)
            del self._kinds[kind]

    def _emit(self, message: str, args: tuple[Any, ...], folded: int, seconds: float) -> None:
        self._log.log(
            self.level, message + " (and %d more like this in %.0f s)", *args, folded, seconds
        )
