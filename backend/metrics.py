"""Prometheus metrics of a backend replica (prefix `backend_`), multiprocess-aware.

Under gunicorn with several workers, PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py does
it) and one scrape of /metrics aggregates every worker of the replica.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "backend_http_requests_total",
    "HTTP requests answered, by method and status code.",
    ["method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "backend_http_request_duration_seconds",
    "Time to answer an HTTP request, by method.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
BOOKINGS = Counter(
    "backend_bookings_total",
    "Booking attempts by outcome (created, sold_out, already_booked, ...).",
    ["outcome"],
    registry=REGISTRY,
)
SHARD_UNAVAILABLE = Counter(
    "backend_shard_unavailable_total",
    "Requests that found a shard database unreachable, by shard alias.",
    ["shard"],
    registry=REGISTRY,
)
SHARD_UP = Gauge(
    "backend_shard_up",
    "1 while this replica can reach the database (by alias: default, shard_0, ...), 0 while "
    "its circuit is open and requests for it fail fast. Set when the state changes.",
    ["shard"],
    registry=REGISTRY,
    # several workers: the latest word of any live worker
    multiprocess_mode="livemostrecent",
)
TOUR_LIST_CACHE = Counter(
    "backend_tour_list_cache_total",
    "Tour list lookups in the cache, by result (hit, miss, stale, error).",
    ["result"],
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    """The exposition text of this replica (all workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
