"""One backend of the upstream pool, the outcome of a request to it, and its health hysteresis."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from lb.upstream.breaker import Breaker
from lb.upstream.outlier import ClientSpread, OutlierDetector


@dataclass(frozen=True, slots=True)
class BackendURL:
    """A backend base URL, `http://host:port` (no path)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class Outcome(Enum):
    """How one attempt on a backend ended, as the pool counts it."""

    OK = "ok"
    CONNECT_FAILURE = "connect_failure"  # never reached the backend
    TIMEOUT = "timeout"
    RESET = "reset"  # connection dropped or reset after the request was sent
    SERVER_ERROR = "server_error"  # 500, 502, 504 from the backend
    BACKPRESSURE = "backpressure"  # 429, 503: the backend is alive and shedding load
    CANCELLED = "cancelled"  # the client went away: counts for nothing

    @property
    def is_failure(self) -> bool:
        """A failure of the backend itself: counts toward ejection and the breaker."""
        return self in _FAILURES


_FAILURES: Final = frozenset(
    {Outcome.CONNECT_FAILURE, Outcome.TIMEOUT, Outcome.RESET, Outcome.SERVER_ERROR}
)
SERVER_ERROR_STATUSES: Final = frozenset({500, 502, 504})
BACKPRESSURE_STATUSES: Final = frozenset({429, 503})


def classify_status(status: int) -> Outcome:
    """The outcome of a response that arrived with `status`."""
    if status in SERVER_ERROR_STATUSES:
        return Outcome.SERVER_ERROR
    if status in BACKPRESSURE_STATUSES:
        return Outcome.BACKPRESSURE
    return Outcome.OK


def backend_name(url: BackendURL) -> str:
    """The backend's name in logs, /status and metric labels: "host:port"."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}"


class HealthState:
    """Active-check hysteresis: `fall` failed checks in a row mark a backend unhealthy,
    `rise` passed checks in a row mark it healthy again. Backends start healthy so traffic
    flows before the first check round completes."""

    __slots__ = ("_streak", "fall", "healthy", "rise")

    def __init__(self, *, rise: int, fall: int, healthy: bool = True) -> None:
        self.rise, self.fall = rise, fall
        self.healthy = healthy
        self._streak = 0  # consecutive results contradicting the current state

    def record(self, ok: bool) -> bool:
        """Count one check result; True when the healthy flag flipped."""
        if ok == self.healthy:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self.healthy = ok
            self._streak = 0
            return True
        return False


class Backend:
    """A backend replica and all the pool's per-backend state. Mutated only by the Pool."""

    __slots__ = (
        "breaker",
        "drained",
        "failures",
        "health",
        "last_pick",
        "last_success",
        "name",
        "outlier",
        "outstanding",
        "requests",
        "spread",
        "url",
    )

    def __init__(
        self,
        url: BackendURL,
        *,
        health: HealthState,
        outlier: OutlierDetector,
        breaker: Breaker,
        spread: ClientSpread | None = None,
    ) -> None:
        self.url = url
        self.name = backend_name(url)
        self.health = health
        self.outlier = outlier
        self.breaker = breaker
        self.spread = spread  # None: every 500 counts (no client evidence required)
        self.outstanding = 0  # requests picked and not yet finished
        self.drained = False  # admin action: no new requests
        self.requests = 0  # finished attempts (cancelled ones excluded)
        self.failures = 0  # finished attempts that were backend failures
        self.last_pick = 0  # pool pick sequence number: tie-break for the balancer
        self.last_success: float | None = None  # clock time of the last completed attempt

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, outstanding={self.outstanding})"
