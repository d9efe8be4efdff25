"""The shard map (pure): tour id -> logical shard -> database alias."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Final

LOGICAL_SHARDS: Final = 64
SHARDED_APPS: Final = frozenset({"tours", "bookings", "payments", "reviews"})
SHARD_ALIAS_PREFIX: Final = "shard_"


def shard_alias(index: int) -> str:
    """The Django database alias of the shard server at position `index` in SHARD_URLS."""
    return f"{SHARD_ALIAS_PREFIX}{index}"


def _as_uuid(tour_id: uuid.UUID | str) -> uuid.UUID:
    return tour_id if isinstance(tour_id, uuid.UUID) else uuid.UUID(str(tour_id))


def logical_shard(tour_id: uuid.UUID | str) -> int:
    """The logical shard (0..63) of a tour: its uuid as an integer, modulo 64. Never changes."""
    return _as_uuid(tour_id).int % LOGICAL_SHARDS


@dataclass(frozen=True)
class ShardMap:
    """Logical shards onto servers: logical % len(aliases)."""

    aliases: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.aliases:
            raise ValueError("a shard map needs at least one shard database")

    def alias_for_logical(self, logical: int) -> str:
        if logical < 0:
            raise ValueError(f"logical shard {logical} is negative")
        return self.aliases[logical % len(self.aliases)]

    def alias_for(self, tour_id: uuid.UUID | str) -> str:
        return self.alias_for_logical(logical_shard(tour_id))

    def logical_shards_of(self, alias: str) -> list[int]:
        """The logical shards a server holds (what moves when a server is added)."""
        return [n for n in range(LOGICAL_SHARDS) if self.alias_for_logical(n) == alias]


def shard_map() -> ShardMap:
    """The map of the configured shards (settings.SHARD_ALIASES)."""
    from django.conf import settings

    return _cached_map(tuple(settings.SHARD_ALIASES))


@functools.lru_cache(maxsize=8)
def _cached_map(aliases: tuple[str, ...]) -> ShardMap:
    return ShardMap(aliases)


def shard_aliases() -> list[str]:
    """Every shard database alias, in SHARD_URLS order."""
    return list(shard_map().aliases)


def shard_for(tour_id: uuid.UUID | str) -> str:
    """The database alias holding the tour (and its bookings, payments, reviews)."""
    return shard_map().alias_for(tour_id)


def alias_for_logical(logical: int) -> str:
    """The database alias holding a logical shard (e.g. one read from a booking id)."""
    return shard_map().alias_for_logical(logical)
