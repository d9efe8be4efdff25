"""The harness itself: servers really start, accept connections, and stop."""

import socket
import subprocess
from pathlib import Path

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


STUBBORN_PARENT = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.processes
def test_a_process_killed_at_its_deadline_takes_its_children_along(tmp_path):
    # a gunicorn master waiting on a stuck worker is such a parent: killing the master
    # alone left the worker running with PID 1 as its parent
    import sys
    import time

    from tests.support.processes import Process

    proc = Process([sys.executable, "-c", STUBBORN_PARENT], log_path=tmp_path / "p.log").start()
    deadline = time.monotonic() + 20
    while not proc.log().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(proc.log().split()[0])
    assert _alive(child)
    proc.stop(timeout=1)
    assert not proc.alive()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_free_ports_come_from_below_the_ephemeral_range_and_are_bindable() -> None:
    """Outgoing connections (thousands in a load test) take ports from the ephemeral range:
    a server port chosen there could be taken before the server binds it."""
    from ops.servers import ephemeral_low, free_run

    for count in (1, 3):
        base = free_run(count)
        assert base >= 10000 and base + count <= ephemeral_low()
        taken = []
        try:
            for port in range(base, base + count):  # every port of the run binds
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
                taken.append(sock)
        finally:
            for sock in taken:
                sock.close()
