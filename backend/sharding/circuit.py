"""Per-database circuits: a database found unreachable is failed fast, then probed.

Without them every request would try a dead shard again, and each try costs a connect
(instant when refused, DB_CONNECT_TIMEOUT seconds when the host is gone). With them the
first failure opens the database's circuit: connections to it fail at once for
SHARD_CIRCUIT_SECONDS; then one connection attempt is let through as the probe (the others
still fail fast), and its success closes the circuit while its failure opens it again.

`Circuit` is the pure decision (the clock injected); `Circuits` owns one per alias for this
process (gunicorn threads share it); the PostgreSQL engine in `backend.sharding.postgresql`
is the only caller of `allow` / `succeeded` / `failed`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

ENGINE: Final = "backend.sharding.postgresql"
DEFAULT_OPEN_SECONDS: Final = 2.0


@dataclass
class Circuit:
    """closed: connect freely. open: fail fast until `retry_at`, then one probe per period."""

    open_seconds: float
    clock: Callable[[], float] = time.monotonic
    is_open: bool = False
    retry_at: float = 0.0
    last_error: str = ""

    def allow(self) -> bool:
        """May a connection be attempted now? Taking the probe moves `retry_at` on, so a
        probe that hangs (a connect timeout) still lets only one attempt per period through."""
        if not self.is_open:
            return True
        now = self.clock()
        if now < self.retry_at:
            return False
        self.retry_at = now + self.open_seconds
        return True

    def succeeded(self) -> bool:
        """Record a good connection; True when this closed an open circuit."""
        was_open, self.is_open, self.last_error = self.is_open, False, ""
        return was_open

    def failed(self, error: str) -> bool:
        """Record an unreachable database; True when this opened a closed circuit."""
        was_open = self.is_open
        self.is_open, self.retry_at, self.last_error = True, self.clock() + self.open_seconds, error
        return not was_open

    def retry_in(self) -> float:
        return max(0.0, self.retry_at - self.clock()) if self.is_open else 0.0


class CircuitOpen(Exception):
    """Raised instead of connecting while a circuit is open (the engine re-raises it as the
    driver's OperationalError, so every caller sees an ordinary unreachable database)."""


class Circuits:
    """One circuit per database alias, for this process."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, open_seconds: float | None = None
    ) -> None:
        self.clock = clock
        self.open_seconds = open_seconds  # None: settings.SHARD_CIRCUIT_SECONDS
        self._lock = threading.Lock()
        self._circuits: dict[str, Circuit] = {}
        self._reported: set[str] = set()  # aliases whose gauge was set at least once

    def _open_seconds(self) -> float:
        if self.open_seconds is not None:
            return self.open_seconds
        from django.conf import settings

        return float(getattr(settings, "SHARD_CIRCUIT_SECONDS", DEFAULT_OPEN_SECONDS))

    def _get(self, alias: str) -> Circuit:
        circuit = self._circuits.get(alias)
        if circuit is None:
            circuit = self._circuits[alias] = Circuit(self._open_seconds(), self.clock)
        return circuit

    def before_connect(self, alias: str) -> None:
        """CircuitOpen when `alias` is being failed fast; otherwise the attempt may go on."""
        with self._lock:
            circuit = self._get(alias)
            if circuit.allow():
                return
            wait, error = circuit.retry_in(), circuit.last_error
        raise CircuitOpen(
            f"{alias} is unavailable (failed fast; next probe in {wait:.1f} s; last error: {error})"
        )

    def succeeded(self, alias: str) -> None:
        with self._lock:
            changed = self._get(alias).succeeded()
        if changed or alias not in self._reported:
            _report(alias, up=True)
            self._reported.add(alias)

    def failed(self, alias: str, error: str) -> None:
        with self._lock:
            changed = self._get(alias).failed(error)
        if changed or alias not in self._reported:
            _report(alias, up=False)
            self._reported.add(alias)

    def state(self) -> dict[str, dict[str, Any]]:
        """{alias: {"open", "retry_in", "last_error"}} of every database seen so far."""
        with self._lock:
            return {
                alias: {
                    "open": c.is_open,
                    "retry_in": round(c.retry_in(), 3),
                    "last_error": c.last_error,
                }
                for alias, c in sorted(self._circuits.items())
            }

    def reset(self) -> None:
        """Forget every circuit (tests)."""
        with self._lock:
            self._circuits.clear()


def _report(alias: str, *, up: bool) -> None:
    from backend import metrics

    metrics.SHARD_UP.labels(shard=alias).set(1 if up else 0)


circuits = Circuits()


def with_circuits(databases: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same DATABASES with every PostgreSQL entry on the circuit-aware engine."""
    out: dict[str, dict[str, Any]] = {}
    for alias, config in databases.items():
        config = dict(config)
        if str(config.get("ENGINE", "")).endswith("postgresql"):
            config["ENGINE"] = ENGINE
        out[alias] = config
    return out
