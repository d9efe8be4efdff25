"""Reaching the shards: failure translation, transactions, pinning and fan-out."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

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


@dataclass(frozen=True)
class Gathered(Generic[T]):
    """What a fan-out read got: the reachable shards' results, and the shards it could not reach."""

    results: list[T]
    unavailable: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.unavailable)


def gather(fn: Callable[[str], list[T]]) -> Gathered[T]:
    """`fn(alias)` for every shard, results concatenated in shard order, skipping the shards
    that cannot be reached (named in `unavailable`). Only when no shard answers at all is
    that an error: ShardUnavailable for the first one.

    Runs in the calling thread, one shard after the other, so each shard reuses this thread's
    persistent connection (a local fan-out over a few shards costs less than a thread hop);
    a dead shard costs a fast failure while its circuit is open (backend.sharding.circuit).
    """
    results: list[T] = []
    unavailable: list[str] = []
    aliases = shard_aliases()
    for alias in aliases:
        try:
            with on_shard(alias):
                results.extend(fn(alias))
        except ShardUnavailable:
            unavailable.append(alias)
    if aliases and len(unavailable) == len(aliases):
        raise ShardUnavailable(unavailable[0], "No shard database can be reached; retry later.")
    return Gathered(results, tuple(unavailable))


def fan_out(fn: Callable[[str], list[T]]) -> list[T]:
    """Like `gather`, for callers that need every shard: ShardUnavailable if one is missing."""
    gathered = gather(fn)
    if gathered.unavailable:
        raise ShardUnavailable(gathered.unavailable[0])
    return gathered.results
