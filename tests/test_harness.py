"""The harness itself: servers really start, accept connections, and stop."""

import subprocess

import pytest

from ops.servers import PostgresServer, RedisServer


@pytest.mark.postgres
def test_three_postgres_servers_accept_queries(pg_databases):
    servers: list[PostgresServer] = pg_databases["servers"]
    assert len({s.port for s in servers}) == 3
    for url in [pg_databases["DATABASE_URL"], *pg_databases["SHARD_URLS"].split(",")]:
        import psycopg2

        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database(), 6 * 7")
            name, answer = cur.fetchone()
        assert answer == 42
        assert url.endswith("/" + name)


@pytest.mark.redis
def test_redis_server_answers_and_stops(fresh_redis: RedisServer):
    out = subprocess.run(
        ["redis-cli", "-p", str(fresh_redis.port), "PING"], capture_output=True, timeout=10
    )
    assert out.stdout.strip() == b"PONG"
    fresh_redis.stop()
    out = subprocess.run(
        ["redis-cli", "-p", str(fresh_redis.port), "PING"], capture_output=True, timeout=10
    )
    assert b"PONG" not in out.stdout
