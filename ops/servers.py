"""Throwaway PostgreSQL and Redis servers started from the local binaries."""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PG_USER = "postgres"


LOWEST_PORT = 10000  # well above the well-known and registered ports services sit on
_rng = random.Random()


def ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int, host: str) -> bool:
    # as a listening server binds (SO_REUSEADDR: a closed connection in TIME_WAIT on the
    # port does not stop it)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_run(count: int = 1, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive TCP ports nothing listens on right now.

    The ports come from below the kernel's ephemeral range: a port the OS hands out (bind to
    port 0) lies inside it, where any outgoing connection (a load test has thousands) may take
    it before our server binds it; below the range only another server can.
    """
    top = ephemeral_low() - count
    if top <= LOWEST_PORT:  # a machine that hands out nearly every port: let the OS choose
        top = 65000 - count
    for _ in range(200):
        base = _rng.randrange(LOWEST_PORT, top)
        if all(_bindable(port, host) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no run of {count} free ports")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (see free_run: outside the ephemeral range)."""
    return free_run(1, host)


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis needs both <= 65535."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 55000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis cluster node")


def wait_for_port(
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    what: str = "server",
    died: Callable[[], str | None] | None = None,
) -> None:
    """Block until something accepts connections on host:port.

    TimeoutError after `timeout` seconds; RuntimeError with `died()`'s message as soon as it
    says the process that should listen there is gone.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if died is not None and (why := died()) is not None:
                raise RuntimeError(why) from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what} did not listen on {host}:{port} after {timeout:g}s"
                ) from None
            time.sleep(0.05)


def postgres_bindir() -> Path:
    """Directory of initdb/pg_ctl: $PG_BINDIR, else the newest /usr/lib/postgresql/*/bin."""
    if env := os.environ.get("PG_BINDIR"):
        return Path(env)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for cand in reversed(candidates):
        if Path(cand, "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError("no PostgreSQL binaries found (install postgresql or set PG_BINDIR)")


@dataclass
class PostgresServer:
    """One PostgreSQL server in its own data directory, trust auth on 127.0.0.1:port.

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
    user in a directory that user owns.
    """

    datadir: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"
    _as_root: bool = field(default_factory=lambda: os.geteuid() == 0, init=False)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(postgres_bindir() / argv[0]), *argv[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, timeout=120)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            pw = pwd.getpwnam(PG_USER)
            for path in (self.datadir, *self.datadir.parents):
                if path == Path("/") or path.stat().st_uid == pw.pw_uid:
                    break
                # the postgres user must reach its directory through every parent
                os.chmod(path, path.stat().st_mode | 0o711)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )

    def start(self) -> PostgresServer:
        self.init()
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.datadir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300 -c shared_buffers=64MB"
        )
        log = self.datadir / "server.log"
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"
        )
        wait_for_port(self.port, timeout=30, what="postgres")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop", check=False
            )

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name (if missing) and return its URL."""
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() != "1":
            self._psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _psql(self, sql: str) -> str:
        out = self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            "postgres",
            "-tAc",
            sql,
        )
        return out.stdout.decode()


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1:port, nothing persisted; optionally a cluster node."""

    workdir: Path
    port: int = 0  # 0: a free one (with a free cluster bus port in cluster mode)
    cluster: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = cluster_port() if self.cluster else free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.workdir / f"redis-{self.port}.log"),
        ]
        if self.cluster:
            argv += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.workdir / f"nodes-{self.port}.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=20, what="redis")
        return self

    def stop(self) -> None:
        """Stop this server (SIGTERM to its own PID, SIGKILL if it lingers)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def create_redis_cluster(nodes: list[RedisServer]) -> None:
    """Join started cluster-mode nodes into one cluster of masters (no replicas)."""
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(
        [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(
            [cli, "-p", str(nodes[0].port), "cluster", "info"], capture_output=True, timeout=10
        ).stdout.decode()
        if "cluster_state:ok" in out:
            return
        time.sleep(0.2)
    raise TimeoutError("redis cluster did not reach cluster_state:ok")
