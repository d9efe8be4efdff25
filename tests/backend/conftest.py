"""Backend fixtures: migrated PostgreSQL databases, gunicorn replicas, API helpers.

How they fit together:
- Migrations run ONCE per session (`migrated_template`): `python -m backend migrate_all` into
  template databases (one per PG server); every test database is a `CREATE DATABASE ...
  TEMPLATE` copy of them, which takes milliseconds.
- `backend_env` (per test, on `pg_databases`) / `module_backend_env` (per module): the env of
  a replica: DATABASE_URL, SHARD_URLS, DJANGO_SECRET_KEY (generated per session), DJANGO_DEBUG=0,
  DJANGO_ALLOWED_HOSTS, a file-based EMAIL_BACKEND into EMAIL_FILE_PATH, MEDIA_ROOT, all in a
  temp dir. REDIS_URL and AWS_STORAGE_BUCKET_NAME are blanked: add them through `extra_env`.
- `replicas(n=1, env=None, extra_env=None)` (per test; `module_replicas` per module) starts
  n gunicorn replicas (`gunicorn -c backend/gunicorn.conf.py backend.wsgi`) on free ports,
  waits for /healthz, returns their base URLs; `replicas.processes` holds the `Process`es.
  All are stopped (by PID) at teardown.
- `Api` wraps requests with a bearer token; `api_client` gives `ApiHelpers`:
  `.user(base)` registers a fresh user and logs in, `.staff(base, env)` creates a staff user
  through `python -m backend create_staff` and logs in, `.make_tour(staff, **fields)` creates
  a tour through the API.
- `django_orm` (session): configures Django in THIS process on a session copy of the
  databases, for tests that want the ORM directly. It sets os.environ only while
  `django.setup()` reads the settings, then restores it, so DJANGO_SETTINGS_MODULE stays unset
  and pytest-django stays inert, and later subprocesses do not inherit that configuration.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import pytest
import requests

from ops.servers import PostgresServer
from tests.support.net import free_port
from tests.support.processes import ROOT, Process, python

TEST_SECRET_KEY = secrets.token_urlsafe(48)  # per test session, never stored
STAFF_PASSWORD = "Staff-pass-9f2c!"
USER_PASSWORD = "User-pass-7d1e!"


# --------------------------------------------------------------------------- databases


def _admin_exec(server: PostgresServer, sql: str) -> None:
    conn = psycopg2.connect(server.url("postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _db_name(url: str) -> str:
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
    """The environment of a replica (and of `python -m backend ...`) on these databases."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "DATABASE_URL": str(dbs["DATABASE_URL"]),
        "SHARD_URLS": str(dbs["SHARD_URLS"]),
        "DJANGO_SECRET_KEY": TEST_SECRET_KEY,
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(tmp / "mail"),
        "MEDIA_ROOT": str(tmp / "media"),
        "BACKEND_VAR_DIR": str(tmp / "var"),
        "REDIS_URL": "",
        "AWS_STORAGE_BUCKET_NAME": "",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "PROMETHEUS_MULTIPROC_DIR": "",
    }


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
    clone_databases(servers, migrated_template, _db_name(str(pg_databases["DATABASE_URL"])))
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


# --------------------------------------------------------------------------- replicas


class ReplicaStarter:
    """Starts gunicorn replicas; `stop_all()` stops exactly the ones it started."""

    def __init__(self, log_dir: Path, default_env: Callable[[], dict[str, str]]) -> None:
        self.log_dir = log_dir
        self.default_env = default_env
        self.processes: list[Process] = []

    def __call__(
        self,
        n: int = 1,
        env: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> list[str]:
        env = dict(env if env is not None else self.default_env())
        env.update(extra_env or {})
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        pending: list[tuple[Process, str]] = []
        for _ in range(n):
            port = free_port()
            proc = Process(
                python("-m", "gunicorn", "-c", "backend/gunicorn.conf.py", "backend.wsgi"),
                log_path=self.log_dir / f"gunicorn-{port}.log",
                env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
            )
            proc.start()
            self.processes.append(proc)
            pending.append((proc, f"http://127.0.0.1:{port}"))
        for proc, url in pending:
            proc.wait_http(f"{url}/healthz", timeout=60)
        return [url for _, url in pending]

    def stop_all(self) -> None:
        # SIGINT is gunicorn's quick shutdown: tests have no requests in flight to drain, and
        # a graceful stop would wait for idle keep-alive connections of the test clients
        for proc in self.processes:
            proc.signal(signal.SIGINT)
        for proc in self.processes:
            proc.stop()


@pytest.fixture
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReplicaStarter]:
    starter = ReplicaStarter(tmp_path / "logs", lambda: request.getfixturevalue("backend_env"))
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def module_replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaStarter]:
    starter = ReplicaStarter(
        tmp_path_factory.mktemp("logs"), lambda: request.getfixturevalue("module_backend_env")
    )
    yield starter
    starter.stop_all()


# --------------------------------------------------------------------------- API helpers


class Api:
    """A requests session against one replica, optionally with a bearer token."""

    def __init__(self, base: str, token: str | None = None, refresh: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        self.token = token
        self.refresh = refresh
        self.user: dict[str, Any] = {}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        kwargs.setdefault("timeout", 30)
        url = path if path.startswith("http") else f"{self.base}{path}"
        return self.session.request(method, url, headers=headers, **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def with_base(self, base: str) -> Api:
        """The same credentials against another replica."""
        other = Api(base, self.token, self.refresh)
        other.user = self.user
        return other


def login(base: str, username: str, password: str) -> Api:
    resp = requests.post(
        f"{base}/api/auth/token/", json={"username": username, "password": password}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return Api(base, body["access"], body["refresh"])


class ApiHelpers:
    def user(self, base: str, username: str | None = None) -> Api:
        """Register a fresh user and log in."""
        username = username or f"u{uuid.uuid4().hex[:12]}"
        resp = requests.post(
            f"{base}/api/auth/register/",
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": USER_PASSWORD,
            },
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        api = login(base, username, USER_PASSWORD)
        api.user = resp.json()
        return api

    def staff(self, base: str, env: dict[str, str], username: str = "staff") -> Api:
        """Create (or reset) a staff user with `python -m backend create_staff`, and log in."""
        manage(env, "create_staff", "--username", username, "--password", STAFF_PASSWORD)
        api = login(base, username, STAFF_PASSWORD)
        api.user = api.get("/api/auth/me/").json()
        return api

    def make_tour(self, staff: Api, **fields: Any) -> dict[str, Any]:
        """Create a tour through the API as staff; returns the tour as the API shows it."""
        body = {
            "name": f"Tour {uuid.uuid4().hex[:8]}",
            "description": "A test tour.",
            "price": "100.00",
            "start_date": "2030-06-01",
            "end_date": "2030-06-05",
            "capacity": 10,
            **fields,
        }
        resp = staff.post("/api/tours/", json=body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


@pytest.fixture(scope="session")
def api_client() -> ApiHelpers:
    return ApiHelpers()


# --------------------------------------------------------------------------- in-process ORM


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
