"""Shared fixtures: real PostgreSQL and Redis servers on free ports, started by the tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.servers import PostgresServer, RedisServer
from tests.support.net import free_port


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    """A scratch directory for the whole session (server data, logs); removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="tourbook-tests-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_servers(work_dir: Path) -> Iterator[list[PostgresServer]]:
    """Three PostgreSQL servers: [default, shard 0, shard 1]. Stopped at session end."""
    servers = [PostgresServer(work_dir / f"pg{i}", port=free_port()) for i in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop("immediate")


@pytest.fixture
def pg_databases(pg_servers: list[PostgresServer]) -> Iterator[dict[str, object]]:
    """Fresh, empty databases for one test: {"DATABASE_URL": url, "SHARD_URLS": "u1,u2"}.

    The default database lives on the first server, one shard database on each of the others.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    urls = [server.create_database(name) for server in pg_servers]
    yield {"DATABASE_URL": urls[0], "SHARD_URLS": ",".join(urls[1:]), "servers": pg_servers}
    for server in pg_servers:
        # a test may have stopped a server on purpose
        with contextlib.suppress(Exception):
            server.drop_database(name)


@pytest.fixture(scope="session")
def redis_server(work_dir: Path) -> Iterator[RedisServer]:
    """One redis-server for the session (flush it in tests that need a clean slate)."""
    server = RedisServer(work_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(work_dir: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    server = RedisServer(work_dir / f"redis-{uuid.uuid4().hex[:8]}").start()
    yield server
    server.stop()
