"""Overload control: per-backend adaptive concurrency limits, a bounded priority wait, fast shedding.

`Admitter.acquire(klass)` returns a backend with a free slot under its adaptive limit
(`lb/upstream/limit.py`), or waits in the lb for one, or raises `Overloaded` (503
`overloaded` + `Retry-After`). The wait is judged by sojourn time, CoDel style, not by
queue length:

* While the queue empties now and then, a waiter may wait up to `queue_delay` (FIFO).
* Once the queue has been non-empty for a whole `queue_delay`, or a request had to be shed
  (a *standing* queue: arrivals outrun the backends; the verdict lasts while shedding goes
  on and two queue delays after), waiting only adds latency: waiters of the normal and low classes
  are then served newest first (adaptive LIFO: the newest still have a chance to be
  answered well) and anyone who waited longer than `target` (a tenth of `queue_delay`)
  is shed. So shed answers take milliseconds, and admitted requests carry little lb queue.
* Priorities: a freed slot goes to the most important class waiting; `low` waits half as
  long as `normal`; `critical` waits up to `queue_delay`, FIFO, unless the critical class
  itself outruns the backends (its own queue has not emptied for a whole `queue_delay`):
  then its waiters too are shed past `target`, oldest first, since waiting longer would
  only delay the same number of admissions; and a share of the total limit
  (`critical_reserve`) is kept for the critical class: the others may not fill the last
  slots.

A slot is the pool's own reservation (`Pool.pick()` counts the backend's outstanding
requests; `Pool.finish()` frees it), so health checks, which do not go through the pool,
never wait behind a limit, and the time spent in this queue is never part of a backend's
measured latency, its ejection or its breaker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Final, Protocol

from lb.errors import Overloaded
from lb.logsummary import LogSummary
from lb.priority import CLASSES, CRITICAL, LOW, Classifier
from lb.upstream.backend import Backend, Outcome
from lb.upstream.limit import GradientLimit
from lb.upstream.pool import Pool, eligible

Clock = Callable[[], float]
log = logging.getLogger("lb.overload")


class Measured(Protocol):
    """An answer whose latency may have been measured (lb/http/upstream.py's connection)."""

    measured: bool

    def backend_latency(self) -> float: ...


MAX_WAITING: Final = 2048  # a hard bound on waiters per process, whatever the delays say
RATE_PERIOD: Final = 0.5  # seconds over which drain and shed rates are sampled
RATE_SMOOTHING: Final = 0.4
MAX_RETRY_AFTER: Final = 30
# Queue delays a standing verdict lasts after the last shed. Long enough to bridge the
# moments a queue under real overload empties; short, because at moderate load a stray shed
# in a burst makes one too, and while it lasts every normal request's patience is `target`:
# with 10 (one second) the bench shed ~5% at 0.8x capacity, the sheds feeding the verdict.
STANDING_HOLD: Final = 2


class _Waiter:
    __slots__ = ("enqueued", "future", "klass", "transient", "tried")

    def __init__(
        self,
        future: asyncio.Future[Backend | None],
        klass: str,
        tried: Collection[Backend],
        enqueued: float,
        transient: bool,
    ) -> None:
        self.future, self.klass, self.tried, self.enqueued = future, klass, tried, enqueued
        self.transient = transient  # it began waiting while the queue was not standing


class _Queue:
    """How many wait, and the CoDel verdict on them: *standing* once they have not all left
    for a whole `delay`, and for another `delay` after that (or after `hold()`), so the
    brief moments the queue empties under overload do not reset the verdict."""

    __slots__ = ("count", "since", "until")

    def __init__(self) -> None:
        self.count = 0
        self.since: float | None = None  # when the queue last became non-empty
        self.until = 0.0  # standing at least until then

    def enter(self, now: float) -> None:
        self.count += 1
        if self.since is None:
            self.since = now

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self.since = None

    def standing(self, now: float, delay: float) -> bool:
        since = self.since
        if since is not None and now - since >= delay:
            self.until = now + delay
            return True
        return now < self.until

    def hold(self, until: float) -> None:
        self.until = max(self.until, until)


class _Rate:
    """Events per second, smoothed over RATE_PERIOD samples."""

    __slots__ = ("_count", "_since", "per_second")

    def __init__(self, now: float) -> None:
        self._count = 0
        self._since = now
        self.per_second = 0.0

    def add(self, now: float, n: int = 1) -> None:
        self._count += n
        self.tick(now)

    def tick(self, now: float) -> None:
        elapsed = now - self._since
        if elapsed >= RATE_PERIOD:
            rate = self._count / elapsed
            self.per_second += RATE_SMOOTHING * (rate - self.per_second)
            self._count = 0
            self._since = now


class Admitter:
    """Slots on the pool's backends under adaptive limits, a bounded wait, shedding by class."""

    def __init__(
        self,
        pool: Pool,
        *,
        classifier: Classifier,
        clock: Clock,
        rng: random.Random,
        floor: int,
        ceiling: int,
        queue_delay: float,
        critical_reserve: float,
        probe_interval: float = 30.0,
        on_shed: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.classifier = classifier
        self._clock = clock
        self._rng = rng
        self.queue_delay = queue_delay
        self.target = max(0.002, queue_delay / 10)
        self.critical_reserve = critical_reserve
        self.probe_interval = probe_interval
        self._floor, self._ceiling = floor, ceiling
        self.limits: dict[Backend, GradientLimit] = {}
        for b in pool.backends:
            self.limit_of(b)
        self._queues: dict[str, deque[_Waiter]] = {k: deque() for k in CLASSES}
        self._all = _Queue()  # every waiter
        self._critical = _Queue()  # the critical class's own
        now = clock()
        self.drain = _Rate(now)
        self._shed_rate = _Rate(now)
        self.admitted: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.shed: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.last_delay = 0.0  # sojourn of the last waiter that got a slot
        self.max_delay = 0.0  # longest sojourn since the last snapshot
        self._on_shed = on_shed
        self.logs = LogSummary(log, clock=clock)  # one line per class per interval
        pool.on_finish = self._finished

    @property
    def waiting(self) -> int:
        """Requests waiting in this process for a slot."""
        return self._all.count

    # -- the hot path ------------------------------------------------------------------------

    def classify(self, method: str, path: str) -> str:
        return self.classifier.classify(method, path)

    async def acquire(self, klass: str, tried: Collection[Backend] = ()) -> Backend | None:
        """A backend with a slot reserved for this attempt; `Pool.finish()` frees it.
        None: no eligible backend at all (the caller answers no_backend). Raises Overloaded
        when every eligible backend stays at its limit for longer than this class may wait."""
        backend = self._take(klass, tried)
        if backend is not None:
            self.admitted[klass] += 1
            return backend
        if not any(eligible(b) and b not in tried for b in self.pool.backends):
            return None
        now = self._clock()
        critical = klass == CRITICAL
        standing = self._critical_standing(now) if critical else self._standing(now)
        wait = self._patience(klass, standing)
        if self.waiting >= MAX_WAITING:
            raise self._shed(klass, now)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), klass, tried, now, not standing)
        self._queues[klass].append(waiter)
        self._all.enter(now)
        if critical:
            self._critical.enter(now)
        timer = loop.call_later(wait, self._expire, waiter)
        try:
            backend = await waiter.future
        except asyncio.CancelledError:  # the client went away while waiting
            future = waiter.future
            if future.cancelled():
                self._gone(waiter)  # still counted as waiting: it leaves the count now
            elif (granted := future.result()) is not None:
                self.pool.finish(granted, Outcome.CANCELLED)  # the slot it was handed
            raise
        finally:
            timer.cancel()
        if backend is None:
            raise self._shed(klass, self._clock())
        self.admitted[klass] += 1
        return backend

    def try_acquire(self, klass: str) -> Backend | None:
        """`acquire()` when a slot is free now, without awaiting (the fast path); None
        when it is not (or no backend is eligible): then `acquire()` waits or says so."""
        backend = self._take(klass, ())
        if backend is not None:
            self.admitted[klass] += 1
        return backend

    def measures(self, backend: Backend) -> bool:
        """Should the attempt about to go to `backend` have its latency measured?"""
        limit = self.limits.get(backend)
        return limit is not None and limit.wants_sample(self._clock())

    def observe(self, backend: Backend, answer: Measured) -> None:
        """An answer's head arrived: its latency, if it was measured, is a sample."""
        if answer.measured:
            self.sample(backend, answer.backend_latency())

    def sample(self, backend: Backend, seconds: float) -> None:
        """The latency of one attempt on `backend`: request sent to response head."""
        limit = self.limits.get(backend)
        if limit is not None:
            limit.sample(seconds, backend.outstanding)

    # -- decisions -------------------------------------------------------------------------

    def limit_of(self, backend: Backend) -> GradientLimit:
        """The backend's limit; a backend added live (PUT /backends) gets a fresh one."""
        limit = self.limits.get(backend)
        if limit is None:
            limit = self.limits[backend] = GradientLimit(
                clock=self._clock,
                floor=self._floor,
                ceiling=self._ceiling,
                key=backend.name,
                full_share=1 - self.critical_reserve,
                probe_interval=self.probe_interval,
            )
        return limit

    def _take(
        self, klass: str, tried: Collection[Backend], *, past_probes: bool = False
    ) -> Backend | None:
        """A backend with room under its limit, its slot reserved. `past_probes`: a limit
        probing its floor counts at the limit it had before the probe."""
        pool = self.pool
        pool.return_expired()
        limits = self.limits
        total = 0
        room: set[Backend] = set()  # eligible, under its limit, not tried yet
        for b in pool.backends:
            gradient = limits.get(b) or self.limit_of(b)
            limit = gradient.unprobed_limit if past_probes else gradient.limit
            if eligible(b):
                total += limit
                if b.outstanding < limit and b not in tried:
                    room.add(b)
        if klass != CRITICAL and self.critical_reserve > 0:
            reserved = round(total * self.critical_reserve)
            if pool.in_flight >= total - reserved:
                return None
        if not room:
            return None
        backend = pool.pick_among(room)
        if backend is not None:
            limits[backend].in_flight(backend.outstanding)
        return backend

    def _standing(self, now: float) -> bool:
        """The queue has not emptied for a whole queue_delay (CoDel's "above target for an
        interval"); it stays so for another queue_delay after that, so the brief moments
        the queue empties under overload do not reset the verdict."""
        return self._all.standing(now, self.queue_delay)

    def _critical_standing(self, now: float) -> bool:
        """`_standing()` of the critical class's own queue."""
        return self._critical.standing(now, self.queue_delay)

    def _patience(self, klass: str, standing: bool) -> float:
        """How long a waiter of `klass` may wait; `standing`: its queue's verdict (the
        critical class's own, for the critical class)."""
        if not standing:
            return self.queue_delay / 2 if klass == LOW else self.queue_delay
        return self.target / 2 if klass == LOW else self.target

    def _shed(self, klass: str, now: float) -> Overloaded:
        # a shed means demand outran the backends for a whole patience: the queue is
        # standing, and stays so while shedding goes on (waiting longer would only add delay)
        hold = now + STANDING_HOLD * self.queue_delay
        self._all.hold(hold)
        if klass == CRITICAL:
            self._critical.hold(hold)
        self.shed[klass] += 1
        self.logs.warning(
            klass, "overload: shedding %s requests (%d shed so far)", klass, self.shed[klass]
        )
        self._shed_rate.add(now)
        if self._on_shed is not None:
            self._on_shed(klass)
        return Overloaded(retry_after=self.retry_after(now))

    def retry_after(self, now: float) -> int:
        """Whole seconds for Retry-After: how long the excess now being shed would take the
        backends to drain at their measured rate, jittered up to twice that, so the clients
        told to come back do not come back together."""
        self.drain.tick(now)
        self._shed_rate.tick(now)
        drain = max(self.drain.per_second, 1.0)
        base = max(1, math.ceil(self._shed_rate.per_second / drain))
        return min(MAX_RETRY_AFTER, base + self._rng.randint(0, base))

    # -- slots freed -----------------------------------------------------------------------

    def _finished(self, backend: Backend, outcome: Outcome) -> None:
        now = self._clock()
        if outcome is Outcome.TIMEOUT:
            limit = self.limits.get(backend)
            if limit is not None:
                limit.drop()
        elif outcome is not Outcome.CANCELLED:
            self.drain.add(now)
        if self._all.count:  # (per request: no property call)
            self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        standing = self._standing(now)
        if standing:
            self._shed_stale(now, CLASSES[1:])
        if self._critical.count and self._critical_standing(now):
            self._shed_stale(now, (CRITICAL,))
        for klass in CLASSES:
            queue = self._queues[klass]
            lifo = standing and klass != CRITICAL
            while queue:
                waiter = queue[-1] if lifo else queue[0]
                if waiter.future.done():  # expired or cancelled: lazily removed here
                    queue.pop() if lifo else queue.popleft()
                    continue
                backend = self._take(klass, waiter.tried)
                if backend is None:
                    return  # no slot for this class: the less important ones get none either
                queue.pop() if lifo else queue.popleft()
                self._served(waiter, now)
                waiter.future.set_result(backend)

    def _shed_stale(self, now: float, classes: Collection[str]) -> None:
        """A standing queue: shed the waiters of `classes` older than their patience. A
        waiter that began waiting before the queue stood keeps the wait it was given (its
        timer ends it): a crowd that limits were still growing to meet filled the queue
        for a whole delay, and the verdict then shed the crowd just as it was let in."""
        for klass in classes:
            queue = self._queues[klass]
            patience = self._patience(klass, True)
            while queue:
                waiter = queue[0]
                if not waiter.future.done():
                    if waiter.transient or now - waiter.enqueued <= patience:
                        break
                    self._gone(waiter)
                    waiter.future.set_result(None)
                queue.popleft()

    def _served(self, waiter: _Waiter, now: float) -> None:
        delay = now - waiter.enqueued
        self.last_delay = delay
        if delay > self.max_delay:
            self.max_delay = delay
        self._gone(waiter)

    def _gone(self, waiter: _Waiter) -> None:
        self._all.leave()
        if waiter.klass == CRITICAL:
            self._critical.leave()

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        now = self._clock()
        backend = None
        if waiter.transient:
            # its wait began in a passing crowd, not a standing queue: a limit that is only
            # probing its floor (a measurement, not the backend's verdict) gives way rather
            # than shed it; the probe ignores answers sent above its floor
            backend = self._take(waiter.klass, waiter.tried, past_probes=True)
        if backend is None:
            self._gone(waiter)
        else:
            self._served(waiter, now)
        waiter.future.set_result(backend)

    # -- observability ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This process's overload state for /status (JSON-serialisable)."""
        now = self._clock()
        self.drain.tick(now)
        self._shed_rate.tick(now)
        backends = []
        for b in self.pool.backends:  # removed backends drop out of the view
            row: dict[str, Any] = {"name": b.name, "in_flight": b.outstanding}
            row.update(self.limit_of(b).snapshot())
            backends.append(row)
        max_delay, self.max_delay = self.max_delay, 0.0
        return {
            "queue_length": self.waiting,
            "queue_delay_ms": round(self.last_delay * 1000, 2),
            "queue_delay_max_ms": round(max_delay * 1000, 2),
            "standing_queue": self._standing(now),
            "critical_standing": self._critical_standing(now),
            "drain_per_second": round(self.drain.per_second, 1),
            "shed_per_second": round(self._shed_rate.per_second, 1),
            "admitted": dict(self.admitted),
            "shed": dict(self.shed),
            "backends": backends,
        }
