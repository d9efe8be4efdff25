"""Prometheus metrics of admission control: bounded labels only (rule, dry_run, mode)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

MODES = ("redis", "local", "open", "closed")


class AdmissionMetrics:
    """The admission counters and the mode gauge, registered in one registry.

    Label children are bound once per rule, so the hot path is one `inc()`.
    With several lb workers (prometheus multiprocess mode) the mode gauge is
    `livemax`: a mode reads 1 when any live worker is in it.
    """

    def __init__(self, registry: CollectorRegistry | None, rules: Iterable[str]) -> None:
        registry = REGISTRY if registry is None else registry
        self.admitted = Counter(
            "lb_admission_admitted_total",
            "Requests admitted by the leaky buckets, by rule.",
            ["rule"],
            registry=registry,
        )
        self.rejected = Counter(
            "lb_admission_rejected_total",
            "Requests over their bucket, by rule; dry_run=1 were let through.",
            ["rule", "dry_run"],
            registry=registry,
        )
        self.mode = Gauge(
            "lb_admission_mode",
            "Where bucket state lives now: 1 for the active mode (redis, local, open, closed).",
            ["mode"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.redis_errors = Counter(
            "lb_admission_redis_errors_total",
            "Failed or timed-out Redis bucket checks (each failed batch counts once).",
            registry=registry,
        )
        self.policy_version = Gauge(
            "lb_admission_policy_version",
            "Version of the admission policy in force (0: the environment's); the newest "
            "any live worker has applied.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.policy_changes = Counter(
            "lb_admission_policy_changes_total",
            "Admission policy changes this process applied (through the admin listener, "
            "from Redis, or from the lb master).",
            registry=registry,
        )
        self._admitted: dict[str, Any] = {}
        self._rejected: dict[tuple[str, str], Any] = {}
        self.bind(rules)
        self._modes = {mode: self.mode.labels(mode) for mode in MODES}
        self.policy_version.set(0)

    def bind(self, rules: Iterable[str]) -> None:
        """Label children for these rules, so the hot path is one dict lookup and `inc()`.

        Rules of a replaced policy keep their children: their counts stay scrapeable, and
        the number of rules an SRE can write is small.
        """
        for rule in rules:
            if rule not in self._admitted:
                self._admitted[rule] = self.admitted.labels(rule)
                for dry in ("0", "1"):
                    self._rejected[(rule, dry)] = self.rejected.labels(rule, dry)

    def count_admitted(self, rule: str) -> None:
        self._admitted[rule].inc()

    def count_rejected(self, rule: str, *, dry_run: bool) -> None:
        self._rejected[(rule, "1" if dry_run else "0")].inc()

    def policy_applied(self, version: int) -> None:
        self.policy_version.set(version)
        self.policy_changes.inc()

    def set_mode(self, active: str) -> None:
        for mode, gauge in self._modes.items():
            gauge.set(1 if mode == active else 0)
