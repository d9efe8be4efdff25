"""The upstream pool: which backends may take a request now, and what their results do to them."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from lb.logsummary import LogSummary
from lb.upstream.backend import (
    Backend,
    BackendURL,
    HealthState,
    Outcome,
    backend_name,
    classify_status,
)
from lb.upstream.balancer import Balancer, make_balancer
from lb.upstream.breaker import Breaker, BreakerState
from lb.upstream.outlier import ClientSpread, OutlierDetector, max_ejected
from lb.upstream.retry import RetryBudget, RetryPolicy

__all__ = ["Outcome", "Pool", "PoolEvents", "classify_status"]

log = logging.getLogger("lb.upstream")

Clock = Callable[[], float]


class PoolSettings(Protocol):
    """The settings the pool is built from (lb.config.Settings has them all): the pool
    takes this view of them rather than importing the configuration module."""

    @property
    def algorithm(self) -> str: ...

    @property
    def backends(self) -> tuple[BackendURL, ...]: ...

    @property
    def breaker_failure_ratio(self) -> float: ...

    @property
    def breaker_min_requests(self) -> int: ...

    @property
    def breaker_open_seconds(self) -> float: ...

    @property
    def breaker_window(self) -> float: ...

    @property
    def error_clients(self) -> int: ...

    @property
    def health_fall(self) -> int: ...

    @property
    def health_interval(self) -> float: ...

    @property
    def health_rise(self) -> int: ...

    @property
    def health_timeout(self) -> float: ...

    @property
    def max_retries(self) -> int: ...

    @property
    def outlier_base_ejection(self) -> float: ...

    @property
    def outlier_consecutive_failures(self) -> int: ...

    @property
    def outlier_max_ejected_ratio(self) -> float: ...

    @property
    def outlier_max_ejection(self) -> float: ...

    @property
    def retry_budget_min(self) -> int: ...

    @property
    def retry_budget_ratio(self) -> float: ...

    @property
    def seed(self) -> int | None: ...


class PoolEvents(Protocol):
    """Receives the pool's state changes (lb/metrics.py implements it for Prometheus)."""

    def ejected(self, backend: str, reason: str) -> None: ...

    def breaker_changed(self, backend: str, state: str) -> None: ...

    def health_changed(self, backend: str, healthy: bool) -> None: ...


class NoEvents:
    """PoolEvents that does nothing."""

    def ejected(self, backend: str, reason: str) -> None:
        pass

    def breaker_changed(self, backend: str, state: str) -> None:
        pass

    def health_changed(self, backend: str, healthy: bool) -> None:
        pass


class Pool:
    """The backends and every per-backend decision: eligibility, balancing, health,
    outlier ejection, breaker, drain. Pure and synchronous; time comes from `clock`.

    A backend is eligible when it is healthy (active checks), not ejected, not drained, and
    its breaker lets a request through. `pick()` reserves the chosen backend (one more
    outstanding request, the half-open probe permit); `finish()` must follow exactly once.
    """

    def __init__(
        self,
        backends: list[Backend],
        *,
        balancer: Balancer,
        clock: Clock,
        retry_policy: RetryPolicy,
        max_ejected_ratio: float,
        budget_ratio: float,
        budget_min: int,
        events: PoolEvents | None = None,
        busy_grace: float = 0.0,
    ) -> None:
        if not backends:
            raise ValueError("a pool needs at least one backend")
        self.backends: tuple[Backend, ...] = tuple(backends)
        self._by_name = {b.name: b for b in self.backends}
        self._balancer = balancer
        self._clock = clock
        # repeated warnings (ejections refused, flapping health) fold into one line per kind
        self.logs = LogSummary(log, clock=clock)
        self._events: PoolEvents = events if events is not None else NoEvents()
        self._max_ejected = max_ejected(max_ejected_ratio, len(self.backends))
        self._max_ejected_ratio = max_ejected_ratio
        self._picks = 0
        self.in_flight = 0  # picked and not yet finished, over all backends
        self.active_checks = False  # set by the HealthChecker while it runs
        # called after every finish(): the overload admitter hands the freed slot on
        self.on_finish: Callable[[Backend, Outcome], None] | None = None
        # a timed-out health check of a backend that completed a request this recently
        # says "busy", not "dead" (0: every timeout counts)
        self.busy_grace = busy_grace
        self.retry_policy = retry_policy
        self.retry_budget = RetryBudget(
            ratio=budget_ratio, minimum=budget_min, active_requests=self._active_requests
        )

    @classmethod
    def from_settings(
        cls,
        settings: PoolSettings,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        events: PoolEvents | None = None,
    ) -> Pool:
        rng = rng if rng is not None else random.Random(settings.seed)
        sink: PoolEvents = events if events is not None else NoEvents()
        backends = []
        for url in settings.backends:
            name = backend_name(url)
            backend = Backend(
                url,
                health=HealthState(rise=settings.health_rise, fall=settings.health_fall),
                outlier=OutlierDetector(
                    clock=clock,
                    consecutive_failures=settings.outlier_consecutive_failures,
                    base_ejection=settings.outlier_base_ejection,
                    max_ejection=settings.outlier_max_ejection,
                ),
                breaker=Breaker(
                    clock=clock,
                    failure_ratio=settings.breaker_failure_ratio,
                    min_requests=settings.breaker_min_requests,
                    window=settings.breaker_window,
                    open_seconds=settings.breaker_open_seconds,
                    on_change=_breaker_listener(name, sink),
                ),
                spread=ClientSpread(
                    clock=clock,
                    window=settings.breaker_window,
                    min_clients=settings.error_clients,
                ),
            )
            backends.append(backend)
        return cls(
            backends,
            balancer=make_balancer(settings.algorithm, rng),
            clock=clock,
            retry_policy=RetryPolicy(settings.max_retries),
            max_ejected_ratio=settings.outlier_max_ejected_ratio,
            budget_ratio=settings.retry_budget_ratio,
            budget_min=settings.retry_budget_min,
            events=sink,
            busy_grace=settings.health_interval + settings.health_timeout,
        )

    # -- the hot path --------------------------------------------------------------------

    def pick(self, exclude: Collection[Backend | str] = frozenset()) -> Backend | None:
        """Choose and reserve a backend, skipping `exclude` (backends or their names, e.g.
        the ones this request already tried). None: no eligible backend."""
        self.return_expired()
        if exclude:

            def allowed(b: Backend) -> bool:
                return b not in exclude and b.name not in exclude and eligible(b)

            backend = self._balancer.choose(self.backends, allowed)
        else:
            backend = self._balancer.choose(self.backends, eligible)
        return self._reserve(backend)

    def pick_among(self, candidates: set[Backend]) -> Backend | None:
        """`pick()` among `candidates`, which the caller found eligible just now (after
        `return_expired()`): the admitter's scan, without a second one. (The balancer still
        walks the whole pool, for round robin's order; membership is a C-level test.)"""
        return self._reserve(self._balancer.choose(self.backends, candidates.__contains__))

    def _reserve(self, backend: Backend | None) -> Backend | None:
        if backend is None or not backend.breaker.acquire():
            return None
        self._picks += 1
        backend.last_pick = self._picks
        backend.outstanding += 1
        self.in_flight += 1
        return backend

    def finish(
        self, backend: Backend, outcome: Outcome, *, status: int = 0, client: str = ""
    ) -> None:
        """Report how the attempt on a picked backend ended (exactly once per pick).

        `status` is the backend's answer (0: none) and `client` the client's key: a 500
        counts as a failure only once several clients met one (see ClientSpread).
        """
        backend.outstanding -= 1
        self.in_flight -= 1
        if outcome is Outcome.CANCELLED:
            backend.breaker.release()
        elif (
            outcome is Outcome.SERVER_ERROR
            and status == 500
            and backend.spread is not None
            and not backend.spread.record(client)
        ):
            # one client's input may be what breaks: no verdict on the backend yet
            backend.requests += 1
            backend.breaker.release()
        else:
            failure = outcome.is_failure
            backend.requests += 1
            if failure:
                backend.failures += 1
            else:
                backend.last_success = self._clock()  # alive: it completes requests
            backend.breaker.record(failure)
            if backend.outlier.record(failure):
                self._try_eject(backend, outcome.value)
        if self.on_finish is not None:
            self.on_finish(backend, outcome)

    def may_retry(
        self, request: tuple[str, bool], outcome: Outcome, reached: bool, retries: int, *,
        streamed: bool,
    ) -> bool:  # fmt: skip
        """May a failed attempt of `request` ((method, has Idempotency-Key)) go again, on
        another backend? Takes a retry-budget permit when it may."""
        policy = self.retry_policy
        if not policy.allows_attempt(retries) or len(self.backends) < 2:
            return False
        # a streamed body cannot be sent twice: only a connect failure leaves it unread
        if reached and streamed:
            return False
        method, has_key = request
        if not policy.may_retry(method, has_key, outcome, reached):
            return False
        return self.retry_budget.try_acquire(reached)

    # -- health, ejection, admin ---------------------------------------------------------

    def health_result(self, backend: Backend, ok: bool, *, timed_out: bool = False) -> None:
        """One active health check result for `backend`. A check that timed out while the
        backend kept completing requests (within `busy_grace`) counts for nothing: the
        check waited in the queue of a busy replica, which is alive."""
        if timed_out and self.busy(backend):
            return
        if backend.health.record(ok):
            self.logs.warning(
                f"health {backend.name}",
                "backend %s is %s",
                backend.name,
                "healthy" if ok else "unhealthy",
            )
            self._events.health_changed(backend.name, ok)
        if ok and backend.outlier.expired():
            backend.outlier.restore()
            self.logs.warning(
                f"back {backend.name}",
                "backend %s is back in rotation after ejection",
                backend.name,
            )

    def busy(self, backend: Backend) -> bool:
        """Did `backend` complete a request within the last `busy_grace` seconds?"""
        last = backend.last_success
        return last is not None and self._clock() - last <= self.busy_grace

    def drain(self, name: str) -> bool:
        """Stop sending new requests to `name` (in-flight ones finish). False: unknown."""
        backend = self._by_name.get(name)
        if backend is None:
            return False
        backend.drained = True
        return True

    def restore(self, name: str) -> bool:
        """Undo `drain(name)`. False: unknown backend."""
        backend = self._by_name.get(name)
        if backend is None:
            return False
        backend.drained = False
        return True

    def set_backends(self, backends: Collection[Backend]) -> tuple[list[str], list[str]]:
        """Replace the backend set live; (added, removed) names.

        A backend already in the pool keeps its object and all its state (health, breaker,
        outstanding requests); a new one starts healthy, so it takes traffic at once and the
        active checks vouch for it from their next round. Requests in flight on a removed
        backend finish normally (they hold the backend; `finish()` still counts them).
        """
        if not backends:
            raise ValueError("a pool needs at least one backend")
        current = self._by_name
        chosen = tuple(current.get(b.name, b) for b in backends)
        added = [b.name for b in chosen if b.name not in current]
        names = {b.name for b in chosen}
        removed = [name for name in current if name not in names]
        self.backends = chosen
        self._by_name = {b.name: b for b in chosen}
        self._max_ejected = max_ejected(self._max_ejected_ratio, len(chosen))
        return added, removed

    def get(self, name: str) -> Backend | None:
        return self._by_name.get(name)

    def eligible_count(self) -> int:
        """How many backends could take a request now."""
        return sum(1 for b in self.backends if eligible(b))

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-backend state for /status (JSON-serialisable)."""
        self.return_expired()
        now = self._clock()
        rows = []
        for b in self.backends:
            until = b.outlier.ejected_until
            rows.append(
                {
                    "name": b.name,
                    "url": b.url.url,
                    "healthy": b.healthy,
                    "ejected_until": None if until is None else round(max(0.0, until - now), 3),
                    "ejections": b.outlier.ejections,
                    "breaker": b.breaker.state.value,
                    "outstanding": b.outstanding,
                    "drained": b.drained,
                    "requests": b.requests,
                    "failures": b.failures,
                    "eligible": eligible(b),
                }
            )
        return rows

    # -- internals -----------------------------------------------------------------------

    def _active_requests(self) -> int:
        return self.in_flight

    def _try_eject(self, backend: Backend, reason: str) -> None:
        ejected = sum(1 for b in self.backends if b.outlier.ejected)
        if ejected >= self._max_ejected:
            self.logs.warning(
                f"not ejected {backend.name}",
                "backend %s not ejected: %d already ejected",
                backend.name,
                ejected,
            )
            return
        seconds = backend.outlier.eject(reason)
        self.logs.warning(
            f"ejected {backend.name}",
            "backend %s ejected for %.1f s (%s)",
            backend.name,
            seconds,
            reason,
        )
        self._events.ejected(backend.name, reason)

    def return_expired(self) -> None:
        # Without active checks nothing would ever vouch for an ejected backend: it then
        # returns when its ejection time is over.
        if self.active_checks:
            return
        for b in self.backends:
            if b.outlier.expired():
                b.outlier.restore()


def eligible(b: Backend) -> bool:
    """May `b` take a request now (healthy, not ejected, not drained, breaker lets it)?"""
    return (
        b.health.healthy
        and b.outlier.ejected_until is None
        and not b.drained
        and b.breaker.available()
    )


def _breaker_listener(name: str, events: PoolEvents) -> Callable[[BreakerState], None]:
    def changed(state: BreakerState) -> None:
        log.warning("backend %s breaker %s", name, state.value)
        events.breaker_changed(name, state.value)

    return changed
