"""gunicorn settings of a backend replica: threaded workers, sizes and address from the env.

GUNICORN_WORKERS (default 2), GUNICORN_THREADS (default 4), GUNICORN_BIND (else 0.0.0.0:$PORT,
else 127.0.0.1:8000), GUNICORN_TIMEOUT (default 30 s), GUNICORN_NICE (default 0: added to
each worker's niceness, so that on a host shared with the lb the lb runs first). With several workers, the Prometheus
client runs in multiprocess mode so one scrape of /metrics covers every worker.

The Django settings are checked here, in the master, before any worker starts: a missing
DJANGO_SECRET_KEY (or any bad value) stops the replica with one line, instead of a traceback
per worker boot.
"""

from __future__ import annotations

import importlib
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


def _nice(name: str) -> int:
    raw = os.environ.get(name, "").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a whole number from 0 to 19") from None
    if not 0 <= value <= 19:
        raise SystemExit(f"{name}={raw!r}: expected a whole number from 0 to 19")
    return value


def _check_settings() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        importlib.import_module(os.environ["DJANGO_SETTINGS_MODULE"])
    except ImproperlyConfigured as exc:
        raise SystemExit(f"backend: configuration error: {exc}") from None


_check_settings()

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
# Request heads: the lb refuses oversized ones first (LB_MAX_HEADER_BYTES, 16384 by default)
# with its JSON 400/431, so gunicorn's limits sit above anything the lb lets through; below
# them gunicorn would answer with its own HTML 400/414/431. limit_request_line cannot be set
# above 8190 except as 0 (no limit of its own: the lb's head limit bounds the line).
_MAX_HEAD = _int("GUNICORN_MAX_HEADER_BYTES", 32768)
limit_request_line = 0
limit_request_field_size = _MAX_HEAD
limit_request_fields = min(32768, _MAX_HEAD // 4)  # "a:\r\n" is the shortest field
accesslog = None  # the app logs one JSON line per request itself
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
proc_name = "tourbook-backend"

# Prometheus multiprocess mode: a directory of this master's own, removed when it exits.
_OWN_PROM_DIR: str | None = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _OWN_PROM_DIR = tempfile.mkdtemp(prefix="backend-prom-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_PROM_DIR


_NICENESS = _nice("GUNICORN_NICE")


def post_fork(server, worker) -> None:  # type: ignore[no-untyped-def]
    if _NICENESS:
        os.nice(_NICENESS)


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    if _OWN_PROM_DIR:
        shutil.rmtree(_OWN_PROM_DIR, ignore_errors=True)
