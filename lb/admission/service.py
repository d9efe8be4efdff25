"""Admission control as the proxy sees it: `build_admission(options)`, `check()`, `apply()`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

from lb.admission.bucket import Decision
from lb.admission.heavy_hitters import ArrivalLog, HeavyHitters
from lb.admission.limiter import Clock, LocalLimiter, Store
from lb.admission.metrics import AdmissionMetrics
from lb.admission.options import AdmissionOptions
from lb.admission.policy import Policy
from lb.admission.rules import Rule, format_rules
from lb.admission.verdict import Verdict, VerdictCache, unavailable

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
    """Chooses the rule, asks the bucket store, counts, and answers with a Verdict.

    The policy (rules, default bucket, dry run) can be replaced while requests flow:
    `apply()` swaps it in one assignment, and a check in flight finishes under the policy
    it started with. Bucket levels are kept across a change (they count requests, whatever
    the bucket's size), so a tighter policy bites at once and a looser one frees at once.
    """

    def __init__(
        self,
        policy: Policy,
        store: Store,
        *,
        metrics: AdmissionMetrics,
        hitters: HeavyHitters | None = None,
        arrivals: ArrivalLog | None = None,
        clock: Clock = time.monotonic,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.hitters = hitters or HeavyHitters(100)
        self.arrivals = arrivals if arrivals is not None else ArrivalLog()
        self._log_throttle = LogThrottle(clock)
        self._details = details or {}
        # admissions by rule, not yet in lb_admission_admitted_total: the hot path counts in
        # plain ints, `flush_counts()` (the proxy's, when idle and every few hundred
        # requests, each tick and before a scrape) hands them over in one inc() per rule
        self._admitted: dict[str, int] = {}
        # the store's synchronous check, when it has one (in-process buckets)
        self._decide_now: Callable[[Rule, str], Decision] | None = (
            store.check_now if isinstance(store, LocalLimiter) else None
        )
        self._use(policy)

    def _use(self, policy: Policy) -> None:
        rules = policy.rule_set()
        self.metrics.bind([rule.name for rule in rules.all])
        self._verdicts = {rule.name: VerdictCache(rule) for rule in rules.all}
        self._unavailable = {rule.name: unavailable(rule, 1) for rule in rules.all}
        self.rules = rules
        self.dry_run = policy.dry_run
        self.policy = policy

    def apply(self, policy: Policy) -> bool:
        """Put `policy` in force if it is newer than the one in force; True when it was."""
        if policy.version <= self.policy.version:
            return False
        self._use(policy)
        self.metrics.policy_applied(policy.version)
        log.info("admission policy v%d in force: %s", policy.version, policy.describe())
        return True

    async def start(self) -> None:
        self.metrics.set_mode(self.store.mode)
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    async def check(self, method: str, path: str, client_key: str) -> Verdict:
        """Admit or reject one request from `client_key` for `method path`."""
        self.arrivals.add(client_key, method, path)
        # one policy for the whole check, even if another is applied while Redis answers
        rule = self.rules.match(method, path)
        verdicts, dry_run, closed = self._verdicts[rule.name], self.dry_run, self._unavailable
        decision = await self.store.check(rule, client_key)
        return self._judge(rule, verdicts, dry_run, closed, decision, method, path, client_key)

    @property
    def synchronous(self) -> bool:
        """Can `check_now()` decide (the buckets live in this process)?"""
        return self._decide_now is not None

    def check_now(self, method: str, path: str, client_key: str) -> Verdict | None:
        """`check()` without awaiting, for the lb's fast path (lb/fastpath.py): possible when
        the buckets live in this process. None, with nothing done, when they do not."""
        decide = self._decide_now
        if decide is None:
            return None
        self.arrivals.add(client_key, method, path)
        rule = self.rules.match(method, path)
        decision = decide(rule, client_key)
        return self._judge(
            rule, self._verdicts[rule.name], self.dry_run, self._unavailable, decision,
            method, path, client_key,
        )  # fmt: skip

    def _judge(
        self,
        rule: Rule,
        verdicts: VerdictCache,
        dry_run: bool,
        closed: dict[str, Verdict],
        decision: Decision | None,
        method: str,
        path: str,
        client_key: str,
    ) -> Verdict:
        if decision is None:
            # the shared store is down and the policy is open or closed
            if self.store.mode == "closed":
                return closed[rule.name]
            self._admitted[rule.name] = self._admitted.get(rule.name, 0) + 1
            return verdicts.unknown
        if decision.allowed:
            self._admitted[rule.name] = self._admitted.get(rule.name, 0) + 1
            return verdicts.verdict(decision)
        self.hitters.add(client_key)
        self.metrics.count_rejected(rule.name, dry_run=dry_run)
        if dry_run:
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
            return verdicts.verdict(decision, enforce=False)
        return verdicts.verdict(decision)

    def flush_counts(self) -> None:
        """The admissions counted since the last flush, into lb_admission_admitted_total."""
        if self._admitted:
            counts, self._admitted = self._admitted, {}
            for rule, count in counts.items():
                self.metrics.admitted.labels(rule).inc(count)

    def top_rejected(self, n: int = 10) -> list[tuple[str, int]]:
        """The most rejected clients (client key, count), highest first, for /status."""
        return self.hitters.top(n)

    def status(self) -> dict[str, Any]:
        """Mode, rules, dry-run flag and policy version for /status."""
        policy = self.policy
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
            "rules_text": format_rules(policy.rules),
            "policy_version": policy.version,
            "policy_set_by": policy.set_by,
            "policy_set_at": policy.set_at,
            "rejected_total": self.hitters.total,
            **self._details,
        }


class _CountsFirst(Collector):
    """Registered before the admission metrics: a scrape of the registry first applies the
    admissions still counted in plain ints (`Admission.flush_counts`)."""

    def __init__(self) -> None:
        self.admission: Admission | None = None

    def collect(self) -> list[Any]:
        if self.admission is not None:
            self.admission.flush_counts()
        return []

    def describe(self) -> list[Any]:
        return []


def build_admission(
    options: AdmissionOptions,
    registry: CollectorRegistry | None = None,
    *,
    clock: Clock = time.monotonic,
) -> Admission:
    """Admission control as configured: Redis buckets behind the failure policy, or local."""
    policy = options.boot_policy()
    first = _CountsFirst()
    (registry if registry is not None else REGISTRY).register(first)
    metrics = AdmissionMetrics(registry, [rule.name for rule in policy.rule_set().all])
    local = LocalLimiter(clock)
    store: Store = local
    details: dict[str, Any] = {"store": "memory"}
    if options.redis_url:
        from lb.admission.failover import Failover
        from lb.admission.redis_limiter import RedisLimiter, redact

        def on_mode(mode: str) -> None:
            metrics.set_mode(mode)

        store = Failover(
            RedisLimiter.from_options(options, on_error=metrics.redis_errors.inc),
            local,
            policy=options.redis_failure,
            on_mode=on_mode,
        )
        details = {
            "store": "redis",
            "redis": redact(options.redis_url),
            "redis_cluster": options.redis_cluster,
            "failure_policy": options.redis_failure,
        }
    first.admission = Admission(policy, store, metrics=metrics, clock=clock, details=details)
    return first.admission
