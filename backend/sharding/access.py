"""Reaching the shards: failure translation, transactions, pinning and fan-out."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import TypeVar

from django.db import InterfaceError, OperationalError, transaction

from backend.common.dberrors import classify
from backend.common.errors import ShardUnavailable
from backend.sharding.shardmap import shard_aliases

T = TypeVar("T")

_PINNED: contextvars.ContextVar[str | None] = contextvars.ContextVar("pinned_shard", default=None)


@contextlib.contextmanager
def on_shard(alias: str) -> Iterator[None]:
    """Run a block against shard `alias`; a database that cannot be reached -> ShardUnavailable.

    Other database errors (a deadlock, a lock timeout) pass through unchanged.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        if classify(exc) == "unreachable":
            from backend import metrics

            metrics.SHARD_UNAVAILABLE.labels(shard=alias).inc()
            raise ShardUnavailable(alias) from exc
        raise


@contextlib.contextmanager
def shard_atomic(alias: str) -> Iterator[None]:
    """transaction.atomic(using=alias), with connection failures reported as ShardUnavailable."""
    with on_shard(alias), transaction.atomic(using=alias):
        yield


@contextlib.contextmanager
def pinned(alias: str) -> Iterator[None]:
    """Route sharded queries that carry no database hint to `alias` inside this block.

    For code that cannot say `.using(alias)` (Django admin internals, DRF validators).
    """
    token = _PINNED.set(alias)
    try:
        yield
    finally:
        _PINNED.reset(token)


def pinned_alias() -> str | None:
    return _PINNED.get()


def fan_out(fn: Callable[[str], list[T]]) -> list[T]:
    """`fn(alias)` for every shard, results concatenated in shard order.

    Runs in the calling thread, one shard after the other, so each shard reuses this thread's
    persistent connection (a local fan-out over a few shards costs less than a thread hop).
    A shard that cannot be reached raises ShardUnavailable(alias): a merged answer that
    silently lacks a shard would be wrong, so the caller answers 503 instead.
    """
    results: list[T] = []
    for alias in shard_aliases():
        with on_shard(alias):
            results.extend(fn(alias))
    return results
