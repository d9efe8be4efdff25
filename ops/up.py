"""`python -m ops up`: the whole stack in the foreground; Ctrl-C stops exactly what it started."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

from ops.servers import PostgresServer, RedisServer, free_port
from ops.stack import (
    Options,
    Plan,
    Stores,
    build_plan,
    sqlite_stores,
    stack_env_file,
    stores_from_env,
    summary,
)
from ops.supervisor import StackError, Supervisor, http_ok, log_tail, spawn, terminate

READY_TIMEOUT = 90.0
DATABASE_NAME = "tourbook"


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m ops up",
        description="Run the whole stack (replicas, lb, migrations, demo data) in the foreground.",
    )
    parser.add_argument("--replicas", type=int, default=3, help="backend replicas (default 3)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="throwaway PostgreSQL servers under VAR/pg (default + 2 shards)",
    )
    parser.add_argument(
        "--redis", action="store_true", help="a local redis-server for buckets and cache"
    )
    parser.add_argument(
        "--lb-workers", type=int, default=None, help="lb processes (default LB_WORKERS or 1)"
    )
    parser.add_argument("--no-seed", dest="seed", action="store_false", help="skip the demo data")
    parser.add_argument(
        "--var", type=Path, default=Path("var"), help="state directory (default var/)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address every listener binds")
    parser.add_argument("--port", type=int, default=8080, help="lb public port (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9100, help="lb admin port (default 9100)")
    parser.add_argument(
        "--backend-base-port", type=int, default=8001, help="first replica port (default 8001)"
    )
    parser.add_argument(
        "--expire-interval",
        type=float,
        default=30.0,
        help="seconds between expire_holds runs (default 30)",
    )
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.lb_workers is not None and args.lb_workers < 1:
        parser.error("--lb-workers must be at least 1")
    return Options(
        var=args.var,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        backend_base_port=args.backend_base_port,
        replicas=args.replicas,
        lb_workers=args.lb_workers,
        postgres=args.postgres,
        redis=args.redis,
        seed=args.seed,
        expire_interval=args.expire_interval,
    )


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(host: str, ports: tuple[tuple[int, str], ...]) -> None:
    taken = [f"{host}:{port} ({what})" for port, what in ports if port_in_use(host, port)]
    if taken:
        raise StackError(
            "port already in use: " + ", ".join(taken) + "; stop what holds it or pick other ports"
        )


def private_file(path: Path, make: str) -> str:
    """The content of a 0600 file under var/, created with `make` the first time."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
    return make


class Stack:
    """One run of the stack: owns the servers, the supervisor and the periodic expiry."""

    def __init__(self, options: Options, environ: Mapping[str, str]) -> None:
        self.options = options
        self.environ = dict(environ)
        self.var = options.var.resolve()
        self.log_dir = self.var / "log"
        self.stop_requested = threading.Event()
        self.supervisor = Supervisor(self.log_dir, self.say)
        self.postgres: list[PostgresServer] = []
        self.redis: RedisServer | None = None
        self.expire: subprocess.Popen[bytes] | None = None

    @staticmethod
    def say(text: str) -> None:
        print(text, flush=True)

    # -- data stores -------------------------------------------------------------------

    def start_postgres(self) -> tuple[str, tuple[str, ...]]:
        names = ("default", "shard0", "shard1")
        for name in names:
            server = PostgresServer(self.var / "pg" / name, port=free_port())
            self.say(f"ops: starting PostgreSQL {name} on 127.0.0.1:{server.port}")
            self.postgres.append(server.start())
        urls = [server.create_database(DATABASE_NAME) for server in self.postgres]
        return urls[0], tuple(urls[1:])

    def stores(self) -> Stores:
        try:
            return self._stores()
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            text = detail.decode(errors="replace").strip() if isinstance(detail, bytes) else ""
            raise StackError(
                f"could not start a data server: {exc}{': ' + text if text else ''};"
                f" see the server logs under {self.var}"
            ) from None

    def _stores(self) -> Stores:
        fallback = sqlite_stores(self.var)
        if self.options.postgres and not self.environ.get("DATABASE_URL"):
            database_url, shard_urls = self.start_postgres()
            fallback = Stores(
                database_url,
                shard_urls,
                None,
                f"throwaway PostgreSQL servers under {self.var / 'pg'}",
            )
        if self.options.redis and not self.environ.get("REDIS_URL"):
            self.redis = RedisServer(self.var / "redis")
            self.say(f"ops: starting Redis on 127.0.0.1:{self.redis.port}")
            self.redis.start()
            fallback = Stores(
                fallback.database_url,
                fallback.shard_urls,
                self.redis.url,
                fallback.description + ", local Redis",
            )
        return stores_from_env(self.environ, fallback)

    # -- one-shot commands ---------------------------------------------------------------

    def run_once(
        self,
        plan: Plan,
        *args: str,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
    ) -> str:
        """Run `python -m backend <args>` to completion; its output, or StackError."""
        name = args[0]
        log_path = self.log_dir / f"{name}.log"
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()
        popen = spawn(plan.command(*args), {**plan.backend_env, **(extra_env or {})}, log_path)
        deadline = time.monotonic() + timeout
        while popen.poll() is None:
            if self.stop_requested.is_set() or time.monotonic() > deadline:
                terminate(popen, 10)
                if self.stop_requested.is_set():
                    return ""
                raise StackError(f"{name} took longer than {timeout:.0f} s; see {log_path}")
            time.sleep(0.1)
        if popen.returncode != 0:
            raise StackError(
                f"{name} failed with exit code {popen.returncode}; its log ({log_path}):\n"
                + log_tail(log_path, 25)
            )
        return log_path.read_text(errors="replace")

    def staff_password(self) -> str:
        return self.environ.get("SEED_STAFF_PASSWORD") or private_file(
            self.var / "staff_password", secrets.token_urlsafe(12)
        )

    def tick_expiry(self, plan: Plan, last: float, now: float) -> float:
        """Start `expire_holds` every expire_interval seconds (never two at once)."""
        if self.expire is not None and self.expire.poll() is not None:
            if self.expire.returncode != 0:
                log = self.log_dir / "expire_holds.log"
                self.say(
                    f"ops: !!! expire_holds failed (exit {self.expire.returncode}):\n"
                    + log_tail(log, 10)
                )
            self.expire = None
        if self.expire is None and now - last >= self.options.expire_interval:
            self.expire = spawn(
                plan.command("expire_holds"),
                dict(plan.backend_env),
                self.log_dir / "expire_holds.log",
            )
            return now
        return last

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        options = self.options
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.var / "db").mkdir(exist_ok=True)  # SQLite creates files, not directories
        secret = private_file(self.var / "secret_key", secrets.token_urlsafe(48))
        token_file = None if self.environ.get("LB_ADMIN_TOKEN") else self.var / "admin_token"
        token = private_file(token_file, secrets.token_urlsafe(32)) if token_file else None
        preview = build_plan(options, self.environ, sqlite_stores(self.var), secret)
        check_ports(options.host, preview.ports)
        plan = build_plan(options, self.environ, self.stores(), secret, admin_token=token)
        (self.var / "stack.env").write_text(stack_env_file(plan))

        self.say(f"ops: migrating ({plan.stores.description})")
        self.run_once(plan, "migrate_all")
        staff = None
        if options.seed and not self.stop_requested.is_set():
            password = self.staff_password()
            self.say("ops: loading demo data (seed_demo)")
            output = self.run_once(plan, "seed_demo", extra_env={"SEED_STAFF_PASSWORD": password})
            tail = output.strip().splitlines()[-12:]
            self.say("\n".join("  seed_demo | " + line for line in tail))
            staff = f"{staff_username(output)} / {password}"

        for service in plan.services:
            if self.stop_requested.is_set():
                return 0
            self.say(f"ops: starting {service.name} on {options.host}:{service.port}")
            child = self.supervisor.start(service)
            self.supervisor.wait_ready(child, READY_TIMEOUT, self.stop_requested.is_set)
        self.wait_public(plan)
        if self.stop_requested.is_set():
            return 0
        pids = self.write_pids({})
        self.say(announce(plan, staff, admin_token_file=token_file))

        last_expiry = time.monotonic()
        while not self.stop_requested.wait(0.5):
            now = time.monotonic()
            self.supervisor.check(now)
            pids = self.write_pids(pids)
            last_expiry = self.tick_expiry(plan, last_expiry, now)
        return 0

    def write_pids(self, written: dict[str, int]) -> dict[str, int]:
        """Keep VAR/stack.json naming the live children (restarts change PIDs)."""
        pids = self.supervisor.pids()
        if pids != written:
            (self.var / "stack.json").write_text(json.dumps({"pids": pids}) + "\n")
        return pids

    def wait_public(self, plan: Plan) -> None:
        url = f"{plan.public_url}/api/tours/"
        deadline = time.monotonic() + READY_TIMEOUT
        while not http_ok(url, timeout=3):
            if self.stop_requested.is_set():
                return
            if time.monotonic() > deadline:
                raise StackError(f"{url} did not answer 200 through the lb; see {self.log_dir}")
            time.sleep(0.3)

    def shutdown(self) -> None:
        """Stop everything this run started, in reverse order, each by its own PID."""
        if self.expire is not None:
            terminate(self.expire, 10)
        self.supervisor.stop()
        if self.redis is not None:
            self.redis.stop()
        for server in reversed(self.postgres):
            server.stop("fast")


def announce(plan: Plan, staff: str | None, *, admin_token_file: Path | None = None) -> str:
    """The summary, led by the web site's address: what most people starting the stack open."""
    text = summary(plan, staff, admin_token_file=admin_token_file)
    head, rule, rows = text.partition("=" * 20 + "\n")
    column = rows.splitlines()[0].index(plan.public_url)  # where the summary's values start
    return f"{head}{rule}{'  web site':<{column}}{plan.public_url}/\n{rows}"


def staff_username(seed_output: str) -> str:
    """The staff user name seed_demo printed (`staff user: NAME password: ...`), else `staff`."""
    found = re.search(r"staff user\W+(\S+)", seed_output)
    return found.group(1) if found else "staff"


@contextlib.contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM ask the run to stop; a second Ctrl-C is not needed (nor harmful)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not event.is_set():
            print(f"\nops: {signal.Signals(signum).name}: stopping the stack", flush=True)
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    stack = Stack(options, os.environ)
    with stop_on_signals(stack.stop_requested):
        try:
            return stack.run()
        except StackError as exc:
            print(f"ops up: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            stack.shutdown()
            print("ops: stopped", flush=True)
