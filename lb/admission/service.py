"""Admission control as the proxy sees it: `build_admission(settings)` and `check()`."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry

from lb.admission.heavy_hitters import HeavyHitters
from lb.admission.limiter import Clock, LocalLimiter, Store
from lb.admission.metrics import AdmissionMetrics
from lb.admission.rules import RuleSet
from lb.admission.verdict import Verdict, VerdictCache, unavailable
from lb.config import Settings, default_rule

__all__ = ["Admission", "Verdict", "build_admission"]

log = logging.getLogger("lb.admission")


class LogThrottle:
    """At most `per_second` log lines per second; the rest are counted and reported later."""

    def __init__(self, clock: Clock, per_second: int = 10) -> None:
        self._clock = clock
        self._per_second = per_second
        self._window = -1.0
        self._used = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._used = now, 0
        if self._used < self._per_second:
            self._used += 1
            return True
        self.suppressed += 1
        return False


class Admission:
    """Chooses the rule, asks the bucket store, counts, and answers with a Verdict."""

    def __init__(
        self,
        rules: RuleSet,
        store: Store,
        *,
        metrics: AdmissionMetrics,
        dry_run: bool = False,
        hitters: HeavyHitters | None = None,
        clock: Clock = time.monotonic,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.rules = rules
        self.store = store
        self.metrics = metrics
        self.dry_run = dry_run
        self.hitters = hitters or HeavyHitters(100)
        self._verdicts = {rule.name: VerdictCache(rule) for rule in rules.all}
        self._unavailable = {rule.name: unavailable(rule, 1) for rule in rules.all}
        self._log_throttle = LogThrottle(clock)
        self._details = details or {}

    async def start(self) -> None:
        self.metrics.set_mode(self.store.mode)
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    async def check(self, method: str, path: str, client_key: str) -> Verdict:
        """Admit or reject one request from `client_key` for `method path`."""
        rule = self.rules.match(method, path)
        decision = await self.store.check(rule, client_key)
        if decision is None:
            # the shared store is down and the policy is open or closed
            if self.store.mode == "closed":
                return self._unavailable[rule.name]
            self.metrics.count_admitted(rule.name)
            return self._verdicts[rule.name].unknown
        if decision.allowed:
            self.metrics.count_admitted(rule.name)
            return self._verdicts[rule.name].verdict(decision)
        self.hitters.add(client_key)
        self.metrics.count_rejected(rule.name, dry_run=self.dry_run)
        if self.dry_run:
            if self._log_throttle.allow():
                log.info(
                    "dry run: would reject %s %s from %s (rule %s, retry after %ss; "
                    "%d such lines suppressed so far)",
                    method,
                    path,
                    client_key,
                    rule.name,
                    decision.retry_after,
                    self._log_throttle.suppressed,
                )
            return self._verdicts[rule.name].verdict(decision, enforce=False)
        return self._verdicts[rule.name].verdict(decision)

    def top_rejected(self, n: int = 10) -> list[tuple[str, int]]:
        """The most rejected clients (client key, count), highest first, for /status."""
        return self.hitters.top(n)

    def status(self) -> dict[str, Any]:
        """Mode, rules and dry-run flag for /status."""
        return {
            "mode": self.store.mode,
            "dry_run": self.dry_run,
            "rules": [
                {
                    "name": rule.name,
                    "method": rule.method,
                    "prefix": rule.prefix,
                    "capacity": rule.capacity,
                    "rate": rule.rate,
                    "policy": rule.policy,
                }
                for rule in self.rules.all
            ],
            "rejected_total": self.hitters.total,
            **self._details,
        }


def build_admission(
    settings: Settings, registry: CollectorRegistry | None = None, *, clock: Clock = time.monotonic
) -> Admission:
    """Admission control as configured: Redis buckets behind the failure policy, or local."""
    rules = RuleSet(default_rule(settings), settings.rate_rules)
    metrics = AdmissionMetrics(registry, [rule.name for rule in rules.all])
    local = LocalLimiter(clock)
    store: Store = local
    details: dict[str, Any] = {"store": "memory"}
    if settings.redis_url:
        from lb.admission.failover import Failover
        from lb.admission.redis_limiter import RedisLimiter, redact

        def on_mode(mode: str) -> None:
            metrics.set_mode(mode)

        store = Failover(
            RedisLimiter.from_settings(settings, on_error=metrics.redis_errors.inc),
            local,
            policy=settings.redis_failure,
            on_mode=on_mode,
        )
        details = {
            "store": "redis",
            "redis": redact(settings.redis_url),
            "redis_cluster": settings.redis_cluster,
            "failure_policy": settings.redis_failure,
        }
    return Admission(
        rules, store, metrics=metrics, dry_run=settings.rate_dry_run, clock=clock, details=details
    )
