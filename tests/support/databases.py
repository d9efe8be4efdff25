"""Database fixtures for backend tests: migrated PostgreSQL copies and the replica environment.

- Migrations run ONCE per session (`migrated_template`): `python -m backend migrate_all` into
  template databases (one per PG server); every test database is a `CREATE DATABASE ...
  TEMPLATE` copy of them, which takes milliseconds.
- `backend_env` (per test, on `pg_databases`) / `module_backend_env` (per module): the env of
  a replica (ops/replicas.py's `replica_env`) on its own copy: DATABASE_URL, SHARD_URLS, a test
  DJANGO_SECRET_KEY, DJANGO_DEBUG=0, a file-based EMAIL_BACKEND into EMAIL_FILE_PATH,
  MEDIA_ROOT, all in a temp dir. REDIS_URL and AWS_STORAGE_BUCKET_NAME are blanked: add them
  through the replicas' `extra_env`.
- `django_orm` (session): configures Django in THIS process on a session copy of the
  databases, for tests that want the ORM directly. It sets os.environ only while
  `django.setup()` reads the settings, then restores it, so DJANGO_SETTINGS_MODULE stays unset
  and pytest-django stays inert, and later subprocesses do not inherit that configuration.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import pytest

from ops.processes import ROOT
from ops.replicas import replica_env
from ops.servers import PostgresServer

TEST_SECRET_KEY = secrets.token_urlsafe(48)  # per test session, never stored


def _admin_exec(server: PostgresServer, sql: str) -> None:
    conn = psycopg2.connect(server.url("postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def clone_databases(servers: list[PostgresServer], template: str, name: str) -> dict[str, str]:
    """(Re)create database `name` on every server as a copy of `template`; returns the URLs."""
    for server in servers:
        _admin_exec(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _admin_exec(server, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    urls = [server.url(name) for server in servers]
    return {"DATABASE_URL": urls[0], "SHARD_URLS": ",".join(urls[1:])}


def drop_databases(servers: list[PostgresServer], name: str) -> None:
    for server in servers:
        # a test may have stopped the server
        with contextlib.suppress(Exception):
            _admin_exec(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_env(dbs: dict[str, Any], tmp: Path) -> dict[str, str]:
    """The environment of a replica (and of `python -m backend ...`) on these databases:
    ops/replicas.py's, with mail into files, media in `tmp`, no S3 and no metrics directory."""
    tmp.mkdir(parents=True, exist_ok=True)
    return replica_env(
        database_url=str(dbs["DATABASE_URL"]),
        shard_urls=str(dbs["SHARD_URLS"]).split(","),
        secret_key=TEST_SECRET_KEY,
        var_dir=tmp / "var",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(tmp / "mail"),
        MEDIA_ROOT=str(tmp / "media"),
        AWS_STORAGE_BUCKET_NAME="",
        PROMETHEUS_MULTIPROC_DIR="",
    )


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `python -m backend <args>` with env; returns stdout, raises with output on failure."""
    full = {**os.environ, **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "backend", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"python -m backend {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


@pytest.fixture(scope="session")
def migrated_template(
    pg_servers: list[PostgresServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Template databases (same name on every server) holding the migrated schema."""
    name = f"tmpl_{uuid.uuid4().hex[:10]}"
    for server in pg_servers:
        _admin_exec(server, f'CREATE DATABASE "{name}"')
    urls = [server.url(name) for server in pg_servers]
    env = base_env(
        {"DATABASE_URL": urls[0], "SHARD_URLS": ",".join(urls[1:])},
        tmp_path_factory.mktemp("migrate"),
    )
    manage(env, "migrate_all", "--verbosity", "0")
    yield name
    drop_databases(pg_servers, name)


@pytest.fixture
def backend_env(
    pg_databases: dict[str, Any], migrated_template: str, tmp_path: Path
) -> dict[str, str]:
    """Env of a replica on this test's own migrated databases (`pg_databases`)."""
    servers = pg_databases["servers"]
    clone_databases(servers, migrated_template, db_name(str(pg_databases["DATABASE_URL"])))
    return base_env(pg_databases, tmp_path / "backend")


@pytest.fixture(scope="module")
def module_backend_env(
    pg_servers: list[PostgresServer],
    migrated_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Like backend_env, shared by one test module (its databases are dropped at the end)."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    dbs = clone_databases(pg_servers, migrated_template, name)
    yield base_env(dbs, tmp_path_factory.mktemp("backend"))
    drop_databases(pg_servers, name)


@pytest.fixture(scope="session")
def django_orm(
    pg_servers: list[PostgresServer],
    migrated_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Django configured in this process on a session copy of the migrated databases."""
    import django

    name = f"s_{uuid.uuid4().hex[:12]}"
    env = base_env(
        clone_databases(pg_servers, migrated_template, name), tmp_path_factory.mktemp("orm")
    )
    env["DJANGO_SETTINGS_MODULE"] = "backend.settings"
    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in env.items() if v})
        for key in (k for k, v in env.items() if not v):
            os.environ.pop(key, None)
        django.setup()
        from django.conf import settings

        assert settings.DATABASES["default"]["NAME"] == name
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield env
    from django.db import connections

    connections.close_all()
    drop_databases(pg_servers, name)


def tour_on(alias: str, capacity: int = 3) -> Any:
    """A tour created through the ORM (with `django_orm`) whose id lands on shard `alias`."""
    import datetime as dt
    from decimal import Decimal

    from backend.sharding import shard_for
    from backend.tours.services import tour_create

    while True:
        tour_id = uuid.uuid4()
        if shard_for(tour_id) == alias:
            return tour_create(
                tour_id=tour_id,
                name=f"orm {alias} {tour_id.hex[:6]}",
                price=Decimal("10.00"),
                start_date=dt.date(2031, 1, 1),
                end_date=dt.date(2031, 1, 2),
                capacity=capacity,
            )
