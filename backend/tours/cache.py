"""The tour-list cache: pages keyed by query, under a version that every tour write replaces.

With REDIS_URL the cache (and so the invalidation) is shared by all replicas; without it each
process has its own and other replicas see a change after TOUR_LIST_CACHE_SECONDS at most.
A cache that fails is skipped for a few seconds (the list is then read from the shards).

Stale-if-error: each whole page is also kept, with the time it was read, for
up to TOUR_LIST_STALE_SECONDS after it was read. When a shard is down and the fresh read comes
back partial, that whole copy is served instead while it is young enough; a partial page is
never cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from backend import metrics

VERSION_KEY = "tours:list:version"
log = logging.getLogger("backend.tours.cache")


class TourListCache:
    """Owns the "cache is down, skip it until" state; the clock is injectable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, backoff: float = 5.0) -> None:
        self.clock = clock
        self.backoff = backoff
        self._skip_until = 0.0

    def _usable(self) -> bool:
        return self.clock() >= self._skip_until

    def _failed(self, exc: Exception) -> None:
        log.warning("tour list cache unavailable: %s", exc)
        metrics.TOUR_LIST_CACHE.labels(result="error").inc()
        self._skip_until = self.clock() + self.backoff

    def _version(self) -> str:
        version = cache.get(VERSION_KEY)
        if version is None:
            cache.add(VERSION_KEY, uuid.uuid4().hex, None)
            version = cache.get(VERSION_KEY) or "0"
        return str(version)

    def get_or_compute(
        self, params: dict[str, Any], compute: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        """(page, how): how is "hit", "miss" or "stale". `params` must fully describe the page;
        `compute` returns a page whose "unavailable" list names the shards it lacks."""
        ttl = settings.TOUR_LIST_CACHE_SECONDS
        if ttl <= 0 or not self._usable():
            return compute(), "miss"
        digest = hashlib.sha1(
            json.dumps(params, sort_keys=True, default=str).encode(), usedforsecurity=False
        ).hexdigest()
        try:
            version = self._version()
            key = f"tours:list:{version}:{digest}"
            found = cache.get(key)
        except Exception as exc:
            self._failed(exc)
            return compute(), "miss"
        if found is not None:
            metrics.TOUR_LIST_CACHE.labels(result="hit").inc()
            return found, "hit"
        metrics.TOUR_LIST_CACHE.labels(result="miss").inc()
        page = compute()
        # the copy's age is wall-clock time: with Redis it is read by other replicas, whose
        # monotonic clocks do not compare with this one's
        stale_key = f"tours:list:stale:{version}:{digest}"
        window = settings.TOUR_LIST_STALE_SECONDS
        try:
            if not page.get("unavailable"):
                cache.set(key, page, ttl)
                if window > 0:
                    cache.set(stale_key, {"at": time.time(), "page": page}, max(ttl, window))
            elif window > 0:
                kept = cache.get(stale_key)
                if kept is not None and time.time() - kept["at"] <= window:
                    metrics.TOUR_LIST_CACHE.labels(result="stale").inc()
                    return kept["page"], "stale"
        except Exception as exc:
            self._failed(exc)
        return page, "miss"

    def invalidate(self) -> None:
        """Every cached page becomes unreachable (a new version); called after tour writes."""
        try:
            cache.set(VERSION_KEY, uuid.uuid4().hex, None)
        except Exception as exc:
            self._failed(exc)


tour_list_cache = TourListCache()


def invalidate_tour_list() -> None:
    tour_list_cache.invalidate()
    purge_edge("tours")  # every tour page the lb holds (list and detail pages carry it)


# --- the lb's micro-cache: purge orders after writes ------------------------------------------
# Tour pages carry tags (`Surrogate-Key: tours tour:<id>`, set by
# backend.common.cache_headers); after a write commits, the affected tags are published on
# Redis (every lb worker subscribes) and named in the response's X-Cache-Purge header (which
# the lb that relays it acts on at once, with or without Redis).

_purges: ContextVar[set[str] | None] = ContextVar("edge_purges", default=None)
_client_lock = threading.Lock()
_client: Any = None


@contextmanager
def collect_purges() -> Iterator[set[str]]:
    """The tags purged while handling one request (for its X-Cache-Purge header)."""
    tags: set[str] = set()
    token = _purges.set(tags)
    try:
        yield tags
    finally:
        _purges.reset(token)


def seats_changed(alias: str, tour_id: uuid.UUID) -> None:
    """A tour's seat count changes in the current transaction on `alias`: purge its pages
    once that commits (at once when no transaction is open)."""
    tag = f"tour:{tour_id}"
    transaction.on_commit(lambda: purge_edge(tag), using=alias)


def purge_edge(*tags: str) -> None:
    """Tell every lb to drop the entries carrying any of `tags`. Never fails the caller."""
    collected = _purges.get()
    if collected is not None:
        collected.update(tags)
    if not settings.REDIS_URL or not tags:
        return
    try:
        _redis().publish(settings.EDGE_PURGE_CHANNEL, " ".join(sorted(tags)))
    except Exception as exc:  # the lb entries then live out their max-age (1 s by default)
        log.warning("edge cache purge of %s not published: %s", tags, exc)


def _redis() -> Any:
    global _client
    with _client_lock:
        if _client is None:
            import redis

            _client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        return _client
