"""Readiness checks: every database alias and the cache; each returns None or what failed."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connections


def check_database(alias: str) -> str | None:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        # a half-dead persistent connection must not be reused by the next request
        connections[alias].close_if_unusable_or_obsolete()
        return (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
    return None


def check_cache() -> str | None:
    if not settings.REDIS_URL:
        return None
    try:
        cache.set("readyz", "1", timeout=5)
        if cache.get("readyz") != "1":
            return "cache read-back failed"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def readiness() -> dict[str, str | None]:
    """{component: None if fine else the error}, for "default", each shard, and "redis"."""
    results: dict[str, str | None] = {alias: check_database(alias) for alias in settings.DATABASES}
    if settings.REDIS_URL:
        results["redis"] = check_cache()
    return results
