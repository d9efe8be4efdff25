"""Backend replicas: the one place that says what a replica's environment is and how one starts.

`ops up`, the bookings bench and the tests all build a replica (gunicorn running backend.wsgi,
and `python -m backend ...` commands on the same databases) through these helpers, so a new
setting the backend needs is added here once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from ops.processes import Process

# Every stack started from here runs its replicas on the lb's host. Past capacity the
# replicas' threads would take every CPU, and the lb's answers, its 503s included, would
# wait behind them in the run queue: seconds at 10x (docs/resilience.md). Niceness 5 lets
# the lb (and the data stores) run first; the replicas get all the CPU they leave.
REPLICA_NICE = 5

GUNICORN_ARGV = (sys.executable, "-m", "gunicorn", "-c", "backend/gunicorn.conf.py", "backend.wsgi")


def replica_env(
    *,
    database_url: str,
    shard_urls: Iterable[str],
    secret_key: str,
    var_dir: Path,
    redis_url: str | None = None,
    debug: bool = False,
    workers: int = 1,
    threads: int = 4,
    nice: int = REPLICA_NICE,
    **extra: str,
) -> dict[str, str]:
    """The environment of a replica and of `python -m backend ...` on these data stores.

    REDIS_URL is "" without Redis (the in-process cache); `extra` adds or overrides variables
    (EMAIL_BACKEND, BACKEND_LOG_LEVEL, ...). `nice`: the replicas' workers run at this
    niceness (GUNICORN_NICE).
    """
    return {
        "DATABASE_URL": database_url,
        "SHARD_URLS": ",".join(shard_urls),
        "REDIS_URL": redis_url or "",
        "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_DEBUG": "1" if debug else "0",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
        "BACKEND_VAR_DIR": str(var_dir),
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_THREADS": str(threads),
        "GUNICORN_NICE": str(nice),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def bind_env(env: Mapping[str, str], host: str, port: int) -> dict[str, str]:
    """`env` for the replica listening on host:port."""
    bound = {**env, "GUNICORN_BIND": f"{host}:{port}"}
    bound.pop("PORT", None)  # gunicorn would prefer $PORT to the bind we give it
    return bound


def replica_process(
    env: Mapping[str, str], port: int, log_path: Path, *, host: str = "127.0.0.1"
) -> Process:
    """A replica on host:port (not started); `env` is laid over this process's environment."""
    return Process(GUNICORN_ARGV, log_path=log_path, env=bind_env(env, host, port))


def start_replicas(
    env: Mapping[str, str],
    ports: Iterable[int],
    log_dir: Path,
    owned: list[Process],
    *,
    timeout: float = 60.0,
) -> list[str]:
    """Start one replica per port on 127.0.0.1, each appended to `owned` (the caller stops
    them, also when this raises), and wait until each answers /healthz; their base URLs.
    Started together, so their start-up overlaps."""
    started = []
    for port in ports:
        proc = replica_process(env, port, log_dir / f"replica-{port}.log").start()
        owned.append(proc)
        started.append((proc, f"http://127.0.0.1:{port}"))
    for proc, url in started:
        proc.wait_http(f"{url}/healthz", timeout=timeout)
    return [url for _, url in started]
