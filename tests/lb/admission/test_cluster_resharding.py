"""A Redis Cluster resharded under the lb: MOVED and ASK answers, and the slot map read again.

A cluster of its own (the test moves slots), real `CLUSTER SETSLOT` / `MIGRATE` as
`redis-cli --cluster reshard` does them, and the admission service the lb runs. A bucket's key
moves with its slot, so after the map is read again the client's bucket is the same one:
still full, whichever node holds it now.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from lb.admission.redis_limiter import bucket_key
from ops.servers import RedisServer, cluster_port, create_redis_cluster
from tests.lb.admission.test_failover import admission_for, burst, wait_for  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def cli(node: RedisServer, *args: str) -> str:
    done = subprocess.run(
        [CLI, "-p", str(node.port), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def node_id(node: RedisServer) -> str:
    return cli(node, "CLUSTER", "MYID")


def owner(nodes: list[RedisServer], slot: int) -> RedisServer:
    """The node that owns `slot`, from CLUSTER NODES (id addr flags master ping pong epoch
    state slot-ranges...; "[slot->-id]" entries are migrations in progress, not ownership)."""
    by_port = {node.port: node for node in nodes}
    for line in cli(nodes[0], "CLUSTER", "NODES").splitlines():
        fields = line.split()
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for part in fields[8:]:
            if part.startswith("["):
                continue
            low, _, high = part.partition("-")
            if int(low) <= slot <= int(high or low):
                return by_port[port]
    raise AssertionError(f"no node owns slot {slot}")


def begin_migration(source: RedisServer, target: RedisServer, slot: int) -> None:
    cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", node_id(source))
    cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", node_id(target))


def migrate_keys(source: RedisServer, target: RedisServer, slot: int) -> int:
    keys = cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
    for key in keys:
        cli(source, "MIGRATE", "127.0.0.1", str(target.port), key, "0", "5000")
    return len(keys)


def finish_migration(nodes: list[RedisServer], target: RedisServer, slot: int) -> None:
    target_id = node_id(target)
    for node in nodes:
        cli(node, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)


@pytest.fixture
def own_cluster(work_dir: Path) -> Iterator[list[RedisServer]]:
    base = work_dir / f"cluster-reshard-{os.getpid()}-{time.monotonic_ns()}"
    nodes = [RedisServer(base / str(i), port=cluster_port(), cluster=True) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        create_redis_cluster(nodes)
        # every node, not only the first, must see the cluster whole before the test moves slots
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in cli(n, "CLUSTER", "INFO") for n in nodes):
            assert time.monotonic() < deadline, "the cluster did not converge"
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def test_moved_and_ask_reread_the_slot_map_and_keep_the_bucket(
    own_cluster: list[RedisServer],
    admission_for: Callable[..., object],  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    nodes = own_cluster
    caplog.set_level(logging.WARNING, logger="lb.admission")
    admission, _ = await admission_for(nodes[0].url, cluster=True)  # type: ignore[misc]
    await wait_for(lambda: admission.status()["mode"] == "redis", within=15)
    client = "10.7.0.1"
    key = bucket_key("default", client)
    slot = key_slot(key.encode())

    assert await burst(admission, client) == 5  # capacity 5: the bucket is full now
    filled = time.monotonic()

    def still_full(admitted: int) -> bool:
        """The bucket leaks 1 a second: a full one admits about one per second since it
        filled; a fresh one (the map gone wrong) would admit all 5."""
        elapsed = time.monotonic() - filled
        assert elapsed < 4, f"too slow to tell a full bucket from a fresh one ({elapsed:.1f} s)"
        return admitted <= int(elapsed) + 1

    source = owner(nodes, slot)
    assert cli(source, "EXISTS", key) == "1"
    target = next(n for n in nodes if n is not source)

    # MOVED: the slot (and the bucket with it) now lives on another node; the lb's map is stale
    begin_migration(source, target, slot)
    assert migrate_keys(source, target, slot) == 1
    finish_migration(nodes, target, slot)
    caplog.clear()
    await admission.check("GET", "/x", client)  # answered MOVED: this check fails over
    assert "MOVED" in caplog.text
    await wait_for(lambda: admission.status()["mode"] == "redis", within=15)
    # the map was read again: the same, full bucket answers, from its new node
    assert still_full(await burst(admission, client, 5))
    assert cli(target, "EXISTS", key) == "1"
    assert cli(source, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) == "0"

    # ASK: halfway through moving the slot back, the key has already gone to the importing
    # node, so its old owner answers ASK; once the move completes, the map is read again
    await burst(admission, client)  # full again
    filled = time.monotonic()
    begin_migration(target, source, slot)
    assert migrate_keys(target, source, slot) == 1
    caplog.clear()
    await admission.check("GET", "/x", client)  # answered ASK: fails over
    assert "ASK" in caplog.text
    finish_migration(nodes, source, slot)
    await wait_for(lambda: admission.status()["mode"] == "redis", within=15)
    assert still_full(await burst(admission, client, 5))
    assert cli(source, "EXISTS", key) == "1"
