"""The embedded defaults: no env but DJANGO_DEBUG=1 -> SQLite default + two SQLite shards under
var/; migrate_all, seed_demo and threaded gunicorn workers writing concurrently all work."""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.net import free_port
from tests.support.processes import ROOT, Process, python

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def _env(var_dir: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {
        **keep,
        "DJANGO_DEBUG": "1",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),  # no key, no start: DEBUG too
        "BACKEND_VAR_DIR": str(var_dir),
        "SEED_STAFF_PASSWORD": "Seed-pass-42!",
    }


def test_embedded_sqlite_stack_migrates_seeds_and_serves_concurrent_writes(tmp_path: Path) -> None:
    env = _env(tmp_path / "var")
    for cmd in (["migrate_all"], ["seed_demo"]):
        done = subprocess.run(
            [sys.executable, "-m", "backend", *cmd],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert "staff user: staff password: Seed-pass-42!" in done.stdout
    assert sorted(p.name for p in (tmp_path / "var").glob("*.sqlite3")) == [
        "default.sqlite3",
        "shard0.sqlite3",
        "shard1.sqlite3",
    ]

    port = free_port()
    proc = Process(
        python("-m", "gunicorn", "-c", "backend/gunicorn.conf.py", "backend.wsgi"),
        log_path=tmp_path / "gunicorn.log",
        env={
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "4",
        },
    )
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{base}/healthz", timeout=60)
        hot = requests.get(f"{base}/api/tours/?search=Black%20Friday", timeout=10).json()
        assert hot["count"] >= 3 and all("Black Friday" in t["name"] for t in hot["results"])
        token = requests.post(
            f"{base}/api/auth/token/",
            json={"username": "staff", "password": "Seed-pass-42!"},
            timeout=10,
        ).json()["access"]
        auth = {"Authorization": f"Bearer {token}"}

        def create(i: int) -> int:
            body: dict[str, Any] = {
                "name": f"Concurrent {i}",
                "price": "10.00",
                "start_date": "2031-01-01",
                "end_date": "2031-01-02",
                "capacity": 5,
            }
            return requests.post(
                f"{base}/api/tours/", json=body, headers=auth, timeout=60
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(create, range(40)))
        assert statuses == [201] * 40, statuses
        found = requests.get(
            f"{base}/api/tours/?search=Concurrent&page_size=100", timeout=10
        ).json()
        assert found["count"] == 40
        assert "database is locked" not in proc.log(100_000)
    finally:
        proc.stop()
