"""The local stack as a plan: which processes `python -m ops up` runs, with what environment.

Pure: built from the options and the caller's environment, no I/O, so it is tested directly.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ops.replicas import GUNICORN_ARGV, bind_env, replica_env

PYTHON = sys.executable
LOCAL_TRUSTED_PROXIES = "127.0.0.1/32"


@dataclass(frozen=True, slots=True)
class Options:
    """What the operator asked for on the command line."""

    var: Path
    host: str = "127.0.0.1"
    port: int = 8080
    admin_port: int = 9100
    backend_base_port: int = 8001
    replicas: int = 3
    lb_workers: int | None = None
    postgres: bool = False
    redis: bool = False
    seed: bool = True
    expire_interval: float = 30.0


@dataclass(frozen=True, slots=True)
class Service:
    """One long-running child: how to start it and how to tell it is ready."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    port: int
    ready_url: str

    @property
    def log_name(self) -> str:
        return f"{self.name}.log"


@dataclass(frozen=True, slots=True)
class Stores:
    """Where the data lives: database URLs and the optional Redis URL."""

    database_url: str
    shard_urls: tuple[str, ...]
    redis_url: str | None
    description: str


@dataclass(frozen=True, slots=True)
class Plan:
    options: Options
    stores: Stores
    backend_env: Mapping[str, str]
    replicas: tuple[Service, ...]
    lb: Service
    ports: tuple[tuple[int, str], ...] = field(default=())

    @property
    def services(self) -> tuple[Service, ...]:
        """Start order; stop in reverse."""
        return (*self.replicas, self.lb)

    @property
    def public_url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.options.host}:{self.options.admin_port}"

    def command(self, *args: str) -> tuple[str, ...]:
        """argv of a one-shot backend management command (migrate_all, seed_demo, ...)."""
        return (PYTHON, "-m", "backend", *args)


def sqlite_stores(var: Path, shards: int = 2) -> Stores:
    """The embedded default: SQLite files under var/db/ (one default, `shards` shards)."""
    db = var.resolve() / "db"
    return Stores(
        database_url=f"sqlite:///{db / 'default.sqlite3'}",
        shard_urls=tuple(f"sqlite:///{db / f'shard{i}.sqlite3'}" for i in range(shards)),
        redis_url=None,
        description=f"SQLite under {db}",
    )


def stores_from_env(environ: Mapping[str, str], fallback: Stores) -> Stores:
    """URLs in the environment win over the fallback (embedded or throwaway servers)."""
    database_url = environ.get("DATABASE_URL") or fallback.database_url
    shard_env = environ.get("SHARD_URLS", "")
    shard_urls = tuple(u.strip() for u in shard_env.split(",") if u.strip()) or fallback.shard_urls
    redis_url = environ.get("REDIS_URL") or fallback.redis_url
    given = [name for name in ("DATABASE_URL", "SHARD_URLS", "REDIS_URL") if environ.get(name)]
    description = fallback.description
    if given:
        description = f"{', '.join(given)} from the environment; otherwise {fallback.description}"
    return Stores(database_url, shard_urls, redis_url, description)


def backend_environment(
    environ: Mapping[str, str], stores: Stores, secret_key: str, var: Path
) -> dict[str, str]:
    """Environment shared by every replica and management command of the local stack: the
    caller's environment, with the stack's data stores, and the replica defaults
    (ops/replicas.py) for whatever the caller did not set."""
    env = dict(environ)
    if not env.get("DJANGO_SETTINGS_MODULE"):
        env.pop("DJANGO_SETTINGS_MODULE", None)  # empty means unset: backend's own settings
    defaults = replica_env(
        database_url=stores.database_url,
        shard_urls=stores.shard_urls,
        redis_url=stores.redis_url,
        secret_key=secret_key,
        var_dir=var.resolve(),
        debug=True,
        # threads, not processes, on a small machine: a busy replica still answers health checks
        workers=1,
        threads=8,
    )
    for key in ("DATABASE_URL", "SHARD_URLS", "REDIS_URL"):
        env[key] = defaults.pop(key)  # the stores are the stack's, whatever the environment says
    if not stores.redis_url:
        env.pop("REDIS_URL")
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env


def build_plan(
    options: Options,
    environ: Mapping[str, str],
    stores: Stores,
    secret_key: str,
    *,
    admin_token: str | None = None,
) -> Plan:
    """Every child of the stack, its environment and its ports."""
    if options.replicas < 1:
        raise ValueError("--replicas must be at least 1")
    backend_env = backend_environment(environ, stores, secret_key, options.var)
    host = options.host
    replicas = []
    for index in range(options.replicas):
        port = options.backend_base_port + index
        replicas.append(
            Service(
                name=f"backend-{index + 1}",
                argv=GUNICORN_ARGV,
                env=bind_env(backend_env, host, port),
                port=port,
                ready_url=f"http://{host}:{port}/healthz",
            )
        )
    lb_env = dict(environ)
    lb_env["LB_LISTEN"] = f"{host}:{options.port}"
    lb_env["LB_ADMIN_LISTEN"] = f"{host}:{options.admin_port}"
    lb_env["LB_BACKENDS"] = ",".join(f"http://{host}:{s.port}" for s in replicas)
    if options.lb_workers is not None:
        lb_env["LB_WORKERS"] = str(options.lb_workers)
    # Locally the load generator and a dev TLS front sit on loopback: believe their
    # X-Forwarded-For, so each simulated client gets its own bucket. Set it empty to turn off.
    lb_env.setdefault("LB_TRUSTED_PROXIES", LOCAL_TRUSTED_PROXIES)
    lb_env.setdefault("LB_CACHE_BYTES", str(64 * 1024 * 1024))  # the micro-cache, per worker
    lb_env.setdefault("PYTHONUNBUFFERED", "1")
    if admin_token and not lb_env.get("LB_ADMIN_TOKEN"):
        # admin writes (policy, drain, backends) need it; `python -m ops tune` reads it
        lb_env["LB_ADMIN_TOKEN"] = admin_token
    if stores.redis_url:
        lb_env["REDIS_URL"] = stores.redis_url
    else:
        lb_env.pop("REDIS_URL", None)
    lb = Service(
        name="lb",
        argv=(PYTHON, "-m", "lb"),
        env=lb_env,
        port=options.port,
        ready_url=f"http://{host}:{options.admin_port}/healthz",
    )
    ports = (
        (options.port, "lb public listener (--port)"),
        (options.admin_port, "lb admin listener (--admin-port)"),
        *((s.port, f"{s.name} (--backend-base-port)") for s in replicas),
    )
    return Plan(options, stores, backend_env, tuple(replicas), lb, ports)


def summary(plan: Plan, staff: str | None, *, admin_token_file: Path | None = None) -> str:
    """The block printed once the stack is up: where everything is."""
    rows = [
        ("public endpoint", plan.public_url),
        ("API docs", f"{plan.public_url}/api/docs/"),
        ("admin", f"{plan.public_url}/admin/"),
        ("status page", f"{plan.admin_url}/status"),
        ("metrics", f"{plan.admin_url}/metrics"),
        (
            "admin token",
            f"{admin_token_file} (mode 0600; `python -m ops tune` reads it)"
            if admin_token_file
            else "LB_ADMIN_TOKEN from the environment",
        ),
        ("replicas", ", ".join(f"http://{plan.options.host}:{s.port}" for s in plan.replicas)),
        ("data", plan.stores.description),
        ("DATABASE_URL", plan.stores.database_url),
        ("SHARD_URLS", ",".join(plan.stores.shard_urls)),
        ("REDIS_URL", plan.stores.redis_url or "unset (in-process buckets and cache)"),
        ("staff login", staff or "not seeded (--no-seed)"),
        ("logs", str(plan.options.var.resolve() / "log")),
        ("stack env", f"{plan.options.var.resolve() / 'stack.env'} (for loadtest.verify)"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = ["", "tourbook stack is up", "=" * 20]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    lines += ["", "Ctrl-C stops everything this command started.", ""]
    return "\n".join(lines)


def stack_env_file(plan: Plan) -> str:
    """Shell lines exporting the stack's data URLs, for `python -m loadtest.verify`."""
    lines = [
        f"DATABASE_URL={plan.stores.database_url}",
        f"SHARD_URLS={','.join(plan.stores.shard_urls)}",
    ]
    if plan.stores.redis_url:
        lines.append(f"REDIS_URL={plan.stores.redis_url}")
    return "\n".join(lines) + "\n"
