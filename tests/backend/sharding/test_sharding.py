"""Shard map and router (pure), and tours spread over both real shard servers."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import psycopg2
import pytest

from backend.sharding.router import ShardRouter
from backend.sharding.shardmap import LOGICAL_SHARDS, SHARDED_APPS, ShardMap, logical_shard


def test_logical_shard_is_stable_and_in_range() -> None:
    tour_id = uuid.UUID("12345678-1234-4321-8765-1234567890ab")
    assert logical_shard(tour_id) == tour_id.int % 64
    assert logical_shard(str(tour_id)) == logical_shard(tour_id)
    assert LOGICAL_SHARDS == 64
    assert all(0 <= logical_shard(uuid.uuid4()) < 64 for _ in range(200))


def test_map_sends_logical_shards_round_robin_onto_servers() -> None:
    two = ShardMap(("shard_0", "shard_1"))
    assert two.alias_for_logical(0) == "shard_0"
    assert two.alias_for_logical(1) == "shard_1"
    assert two.alias_for_logical(63) == "shard_1"
    assert len(two.logical_shards_of("shard_0")) == 32


def test_adding_a_server_moves_whole_logical_shards_only() -> None:
    before = ShardMap(("shard_0", "shard_1"))
    after = ShardMap(("shard_0", "shard_1", "shard_2"))
    ids = [uuid.uuid4() for _ in range(500)]
    for tour_id in ids:
        # tours of one logical shard always move together
        same_logical = [t for t in ids if logical_shard(t) == logical_shard(tour_id)]
        assert {after.alias_for(t) for t in same_logical} == {after.alias_for(tour_id)}
    moved = {logical_shard(t) for t in ids if before.alias_for(t) != after.alias_for(t)}
    assert moved, "a third server takes over some logical shards"
    assert len(moved) < LOGICAL_SHARDS


def test_map_needs_a_shard() -> None:
    with pytest.raises(ValueError):
        ShardMap(())


def test_router_keeps_sharded_apps_on_shards_and_the_rest_on_default() -> None:
    router = ShardRouter()
    for app in SHARDED_APPS:
        assert router.allow_migrate("shard_0", app) is True
        assert router.allow_migrate("default", app) is False
    for app in ("auth", "contenttypes", "token_blacklist", "accounts", "admin", "sessions"):
        assert router.allow_migrate("default", app) is True
        assert router.allow_migrate("shard_1", app) is False


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.processes
def test_tours_land_on_the_shard_of_their_id_and_spread_over_both(
    backend_env: dict[str, str], replicas: Any, api_client: Any
) -> None:
    (base,) = replicas(1, env=backend_env)
    staff = api_client.staff(base, backend_env)
    created = [api_client.make_tour(staff, name=f"Spread {i}") for i in range(16)]
    shard_urls = backend_env["SHARD_URLS"].split(",")
    on_shard = [{str(r[0]) for r in _rows(url, "SELECT id FROM tours_tour")} for url in shard_urls]
    two = ShardMap(("shard_0", "shard_1"))
    placed: Counter[str] = Counter()
    for tour in created:
        alias = two.alias_for(tour["id"])
        index = int(alias.split("_")[1])
        assert tour["id"] in on_shard[index]
        assert tour["id"] not in on_shard[1 - index]
        placed[alias] += 1
    assert all(ids for ids in on_shard), "both shard servers hold tours"
    assert sum(placed.values()) == 16
    # users live on the default database only
    assert _rows(backend_env["DATABASE_URL"], "SELECT count(*) FROM auth_user")[0][0] >= 1
    for url in shard_urls:
        assert _rows(url, "SELECT to_regclass('auth_user')")[0][0] is None
