"""The proxy's books: requests in flight, answers by backend, metrics and the access log."""

from __future__ import annotations

import asyncio

from lb.accesslog import AccessLog
from lb.admission.service import Admission
from lb.errors import LbError
from lb.http.request import Request
from lb.metrics import FLUSH_EVERY, NO_BACKEND, Metrics


class Ledger:
    """`begin()` when a request starts, `account()` exactly once when it ends, whichever
    path answered it (lb/proxy.py, lb/fastpath.py)."""

    def __init__(
        self,
        metrics: Metrics,
        admission: Admission | None,
        loop: asyncio.AbstractEventLoop,
        *,
        access_log: bool,
    ) -> None:
        self.metrics = metrics
        self.admission = admission
        self.loop = loop
        self.in_flight = 0
        self.answered: dict[str, int] = {}  # responses by backend name (or "none")
        self._idle_empty = asyncio.Event()
        self._idle_empty.set()
        self.access_log = AccessLog() if access_log else None
        metrics.before_collect.append(self.flush_counts)  # a scrape sees every request

    def begin(self) -> float:
        """A request starts (the time it started)."""
        self.in_flight += 1
        self._idle_empty.clear()
        return self.loop.time()

    def account(
        self, request: Request, rid: str, started: float, status: int, backend_name: str
    ) -> None:
        """A request ended: metrics, counts, the access log."""
        self.in_flight -= 1
        seconds = self.loop.time() - started
        self.metrics.observe(backend_name, status, seconds)
        if self.in_flight == 0:
            self._idle_empty.set()
            self.flush_counts()  # idle: nothing to batch with
        elif self.metrics.pending >= FLUSH_EVERY:
            self.flush_counts()
        self.answered[backend_name] = self.answered.get(backend_name, 0) + 1
        if self.access_log is not None:
            line = (rid, request.peer, request.method, request.path, status, backend_name)
            self.access_log.line(*line, seconds * 1000)

    def protocol_error(self, error: LbError) -> None:
        """Count an answer the HTTP layer wrote for a request that never reached us."""
        self.metrics.lb_error(error.code)
        self.metrics.observe(NO_BACKEND, error.status, 0.0)
        self.answered[NO_BACKEND] = self.answered.get(NO_BACKEND, 0) + 1
        self.flush_counts()

    def flush_counts(self) -> None:
        """Counts kept in plain ints on the hot path, into their metrics (when idle, every
        FLUSH_EVERY requests, every tick and before a scrape)."""
        self.metrics.flush(self.in_flight)
        if self.admission is not None:
            self.admission.flush_counts()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle_empty.wait()
