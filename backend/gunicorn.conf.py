"""gunicorn settings of a backend replica: threaded workers, sizes and address from the env.

GUNICORN_WORKERS (default 2), GUNICORN_THREADS (default 4), GUNICORN_BIND (else 0.0.0.0:$PORT,
else 127.0.0.1:8000), GUNICORN_TIMEOUT (default 30 s). With several workers, the Prometheus
client runs in multiprocess mode so one scrape of /metrics covers every worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a positive integer") from None
    if value < 1:
        raise SystemExit(f"{name}={raw!r}: expected a positive integer")
    return value


wsgi_app = "backend.wsgi:application"
worker_class = "gthread"
workers = _int("GUNICORN_WORKERS", 2)
threads = _int("GUNICORN_THREADS", 4)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = 5
if os.environ.get("GUNICORN_BIND"):
    bind = [os.environ["GUNICORN_BIND"]]
elif os.environ.get("PORT"):
    bind = [f"0.0.0.0:{_int('PORT', 8000)}"]
else:
    bind = ["127.0.0.1:8000"]
accesslog = None  # the app logs one JSON line per request itself
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
proc_name = "tourbook-backend"

# Prometheus multiprocess mode: a directory of this master's own, removed when it exits.
_OWN_PROM_DIR: str | None = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _OWN_PROM_DIR = tempfile.mkdtemp(prefix="backend-prom-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_PROM_DIR


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    if _OWN_PROM_DIR:
        shutil.rmtree(_OWN_PROM_DIR, ignore_errors=True)
