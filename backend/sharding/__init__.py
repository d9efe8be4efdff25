"""Sharding by tour id: 64 logical shards mapped onto the shard databases in SHARD_URLS.

- `logical_shard(tour_id)` -> 0..63, stable forever (it is stored in booking ids).
- `shard_for(tour_id)` -> the database alias ("shard_0", ...): logical % number of servers,
  so adding a server moves whole logical shards.
- Models of the apps in `SHARDED_APPS` live on the shards; everything else on "default".
  Sharded reads and writes name their database: `.using(alias)`, an instance hint, or
  `pinned(alias)` around code (e.g. Django internals) that cannot pass one.
- `gather(fn)` runs `fn(alias)` for every reachable shard and concatenates the results,
  naming the shards it could not reach (a partial answer); `fan_out(fn)` needs them all.
- `on_shard(alias)` turns a connection failure into `ShardUnavailable(alias)` (503).
- A shard found unreachable is failed fast for a short while, then probed (`circuit.py`).
"""

from backend.sharding.access import (
    Gathered,
    fan_out,
    gather,
    on_shard,
    pinned,
    pinned_alias,
    shard_atomic,
)
from backend.sharding.shardmap import (
    LOGICAL_SHARDS,
    SHARDED_APPS,
    ShardMap,
    alias_for_logical,
    logical_shard,
    shard_aliases,
    shard_for,
    shard_map,
)

__all__ = [
    "LOGICAL_SHARDS",
    "SHARDED_APPS",
    "Gathered",
    "ShardMap",
    "alias_for_logical",
    "fan_out",
    "gather",
    "logical_shard",
    "on_shard",
    "pinned",
    "pinned_alias",
    "shard_aliases",
    "shard_atomic",
    "shard_for",
    "shard_map",
]
