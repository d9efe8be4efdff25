"""Prometheus metrics of the proxy (lb_*), on an injected registry; also the pool's event sink."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

BREAKER_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
CODE_CLASSES: Final = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
NO_BACKEND: Final = "none"  # the backend label of answers the lb wrote itself
# Requests counted in plain ints before they reach the prometheus_client values (see
# `Metrics.observe`): at most this many, or until the lb is idle, or the next tick.
FLUSH_EVERY: Final = 512
_BOUNDS: Final = (*LATENCY_BUCKETS, float("inf"))


def code_class(status: int) -> str:
    return CODE_CLASSES[status // 100] if 100 <= status < 600 else "5xx"


class _FlushFirst(Collector):
    """Registered before every lb_* metric: a scrape of this process's registry first
    applies the counts still held in plain ints (`Metrics.before_collect`)."""

    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self._hooks = hooks

    def collect(self) -> Iterable[Any]:
        for hook in self._hooks:
            hook()
        return []

    def describe(self) -> Iterable[Any]:
        return []


class Metrics:
    """Every lb_* metric. Implements the pool's PoolEvents (ejected, breaker, health).

    With several worker processes prometheus_client's multiprocess mode is active (the
    master sets PROMETHEUS_MULTIPROC_DIR); gauges then say how to combine the workers.

    The per-request figures (lb_requests, lb_request_duration_seconds, lb_in_flight_requests)
    are counted in plain ints and handed to prometheus_client in batches (`flush()`): each
    value update there takes a lock and, with several workers, checks the PID (a system
    call) and writes an mmap'ed file; a request made six of them.
    """

    def __init__(self, registry: CollectorRegistry, backends: Iterable[str] = ()) -> None:
        self.registry = registry
        # hooks run before a scrape of `registry`: the proxy flushes its batched counts
        self.before_collect: list[Callable[[], None]] = []
        registry.register(_FlushFirst(self.before_collect))
        self.requests = Counter(
            "lb_requests",
            "Requests answered, by status class and the backend that answered "
            '("none": the lb answered itself).',
            ["code_class", "backend"],
            registry=registry,
        )
        self.duration = Histogram(
            "lb_request_duration_seconds",
            "Time from request headers received to the last response byte sent.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "lb_in_flight_requests",
            "Requests being handled now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.retries = Counter(
            "lb_upstream_retries",
            "Requests re-sent to another backend, by what failed.",
            ["reason"],
            registry=registry,
        )
        self.ejections = Counter(
            "lb_backend_ejections",
            "Passive outlier ejections, by backend and the failure that caused them.",
            ["backend", "reason"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "lb_backend_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half_open, 2 open (worst worker).",
            ["backend"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.healthy = Gauge(
            "lb_backend_healthy",
            "1 when active health checks pass for the backend, else 0.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.outstanding = Gauge(
            "lb_backend_outstanding_requests",
            "Requests sent to the backend and not finished yet.",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.lb_errors = Counter(
            "lb_lb_errors",
            "Error answers written by the lb itself, by code.",
            ["code"],
            registry=registry,
        )
        self._overload_metrics(registry)
        self._requests: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        # not yet flushed: requests by (code class, backend); per backend the duration
        # histogram's bucket counts (not cumulative) followed by the sum of the seconds
        self._pending_requests: dict[tuple[str, str], int] = {}
        self._pending_durations: dict[str, list[float]] = {}
        self.pending = 0
        self._retries: dict[str, Any] = {}
        self._errors: dict[str, Any] = {}
        self._pending_counts: dict[tuple[str, str], int] = {}
        # the labelled counters `_count()` batches: children by label, and their metric
        self._counted: dict[str, tuple[dict[str, Any], Any]] = {
            "errors": (self._errors, self.lb_errors),
            "retries": (self._retries, self.retries),
            "shed": (self._shed, self.shed_total),
        }
        for name in backends:
            self.breaker_state.labels(name).set(0)
            self.healthy.labels(name).set(1)
            self.outstanding.labels(name).set(0)

    # -- the hot path: label children are looked up once ----------------------------------

    def observe(self, backend: str, status: int, seconds: float) -> None:
        """One answered request; counted now, handed to prometheus_client by `flush()`."""
        key = (CODE_CLASSES[status // 100] if 100 <= status < 600 else "5xx", backend)
        pending = self._pending_requests
        pending[key] = pending.get(key, 0) + 1
        hist = self._pending_durations.get(backend)
        if hist is None:
            hist = self._pending_durations[backend] = [0.0] * (len(_BOUNDS) + 1)
        hist[bisect_left(_BOUNDS, seconds)] += 1
        hist[-1] += seconds
        self.pending += 1

    def flush(self, in_flight: int) -> None:
        """Hand the counted requests to prometheus_client; `in_flight`: requests now."""
        self.in_flight.set(in_flight)
        if self._pending_counts:
            counts, self._pending_counts = self._pending_counts, {}
            for (kind, label), count in counts.items():
                children, metric = self._counted[kind]
                child = children.get(label)
                if child is None:
                    child = children[label] = metric.labels(label)
                child.inc(count)
        if not self.pending:
            return
        requests, self._pending_requests = self._pending_requests, {}
        durations, self._pending_durations = self._pending_durations, {}
        self.pending = 0
        for key, count in requests.items():
            child = self._requests.get(key)
            if child is None:
                child = self._requests[key] = self.requests.labels(*key)
            child.inc(count)
        for backend, counts in durations.items():
            hist = self._durations.get(backend)
            if hist is None:
                hist = self._durations[backend] = self.duration.labels(backend)
            # Histogram.observe() one value at a time would undo the batching: the
            # children's bucket and sum values take a count at once (prometheus_client
            # keeps buckets non-cumulative and sums them when collected)
            buckets = hist._buckets
            for i, observed in enumerate(counts[:-1]):
                if observed:
                    buckets[i].inc(observed)
            hist._sum.inc(counts[-1])

    def lb_error(self, code: str) -> None:
        self._count("errors", code)

    def retry(self, reason: str) -> None:
        self._count("retries", reason)

    def _count(self, kind: str, label: str) -> None:
        """One more of a labelled counter, handed over by `flush()` (each inc() in
        multiprocess mode checks the PID and writes a mapped file)."""
        key = (kind, label)
        self._pending_counts[key] = self._pending_counts.get(key, 0) + 1
        self.pending += 1

    # -- PoolEvents --------------------------------------------------------------------------

    def ejected(self, backend: str, reason: str) -> None:
        self.ejections.labels(backend, reason).inc()

    def breaker_changed(self, backend: str, state: str) -> None:
        self.breaker_state.labels(backend).set(BREAKER_VALUES.get(state, 2))

    def health_changed(self, backend: str, healthy: bool) -> None:
        self.healthy.labels(backend).set(1 if healthy else 0)

    # -- periodic sync from the pool's snapshot ----------------------------------------------

    def sync(self, snapshot: list[dict[str, Any]]) -> None:
        """Refresh the per-backend gauges from `Pool.snapshot()`."""
        for row in snapshot:
            name = row["name"]
            self.outstanding.labels(name).set(row["outstanding"])
            self.healthy.labels(name).set(1 if row["healthy"] else 0)
            self.breaker_state.labels(name).set(BREAKER_VALUES.get(row["breaker"], 2))

    # -- overload control (lb/overload.py) -------------------------------------------------

    def _overload_metrics(self, registry: CollectorRegistry) -> None:
        self.concurrency_limit = Gauge(
            "lb_backend_concurrency_limit",
            "Adaptive concurrency limit per backend (summed over live workers).",
            ["backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.min_rtt = Gauge(
            "lb_backend_min_rtt_seconds",
            "The backend's unloaded latency as last probed (highest over workers).",
            ["backend"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.queue_length = Gauge(
            "lb_overload_queue_length",
            "Requests waiting in the lb for a backend slot.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.queue_delay = Gauge(
            "lb_overload_queue_delay_seconds",
            "Longest wait in the lb's queue since the last sync, of requests that got a slot.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.shed_total = Counter(
            "lb_overload_shed",
            "Requests answered 503 overloaded, by priority class.",
            ["class"],
            registry=registry,
        )
        self.admitted_total = Counter(
            "lb_overload_admitted",
            "Requests that got a backend slot, by priority class.",
            ["class"],
            registry=registry,
        )
        self._shed: dict[str, Any] = {}
        self._admitted_seen: dict[str, int] = {}

    def shed(self, klass: str) -> None:
        self._count("shed", klass)

    def sync_overload(self, snapshot: dict[str, Any]) -> None:
        """Refresh the overload gauges from `Admitter.snapshot()`."""
        self.queue_length.set(snapshot["queue_length"])
        self.queue_delay.set(snapshot["queue_delay_max_ms"] / 1000)
        for row in snapshot["backends"]:
            self.concurrency_limit.labels(row["name"]).set(row["limit"])
            self.min_rtt.labels(row["name"]).set(row["min_rtt_ms"] / 1000)
        for klass, count in snapshot["admitted"].items():
            delta = count - self._admitted_seen.get(klass, 0)
            if delta > 0:
                self.admitted_total.labels(klass).inc(delta)
            self._admitted_seen[klass] = count


class CacheMetrics:
    """The micro-cache's lb_cache_* metrics (lb/cache/); implements its CacheEvents."""

    def __init__(self, registry: CollectorRegistry, max_bytes: int) -> None:
        self.requests = Counter(
            "lb_cache_requests",
            "GET/HEAD requests by what the cache did: hit, stale_revalidate, stale_error, "
            "coalesced, miss, bypass (Authorization, cookies, Range).",
            ["result"],
            registry=registry,
        )
        self.bytes = Gauge(
            "lb_cache_bytes",
            "Bytes held by the cache (keys, heads, bodies, overhead), summed over workers.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.limit = Gauge(
            "lb_cache_limit_bytes",
            "LB_CACHE_BYTES, summed over workers (each worker has its own cache).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.entries = Gauge(
            "lb_cache_entries",
            "Stored responses, summed over workers.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.purges = Counter(
            "lb_cache_purges",
            "Purge orders applied, by source (header, redis, gap: a reconnect forgot all).",
            ["source"],
            registry=registry,
        )
        self.purged_keys = Counter(
            "lb_cache_purged_keys", "Keys dropped by purge orders.", registry=registry
        )
        self.evictions = Counter(
            "lb_cache_evictions", "Keys evicted to stay within LB_CACHE_BYTES.", registry=registry
        )
        self.limit.set(max_bytes)
        self._results: dict[str, Any] = {}
        self._evicted = 0

    def result(self, name: str) -> None:
        child = self._results.get(name)
        if child is None:
            child = self._results[name] = self.requests.labels(name)
        child.inc()

    def purged(self, source: str, keys: int) -> None:
        self.purges.labels(source).inc()
        if keys:
            self.purged_keys.inc(keys)

    def sync(self, bytes_held: int, entries: int, evicted: int) -> None:
        self.bytes.set(bytes_held)
        self.entries.set(entries)
        if evicted > self._evicted:
            self.evictions.inc(evicted - self._evicted)
            self._evicted = evicted
