"""A real booking stack for the booking tests: migrated PostgreSQL (default + 2 shards), N gunicorn
replicas, users with tokens and tours on chosen shards, and SQL access to the shards.

One stack is shared by every booking test module of a session (built on first use, stopped at
the end): migrating three databases and starting replicas costs seconds, and the tests isolate
themselves by using their own tours and users. `python -m tests.backend.bookings_support seed`
is the seeding half that runs inside the backend's own configuration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from ops.processes import ROOT, Process, python
from ops.replicas import replica_env, start_replicas
from ops.servers import free_port
from tests.support.databases import clone_databases

REPLICAS = 2


@dataclass
class User:
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Stack:
    env: dict[str, str]
    urls: list[str]
    shard_urls: list[str]
    work: Path
    processes: list[Process] = field(default_factory=list)
    user_pool: list[User] = field(default_factory=list)
    staff_pool: list[User] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.urls[0]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`python -m <args>` with the stack's environment (e.g. backend expire_holds)."""
        return subprocess.run(
            python("-m", *args),
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        out = subprocess.run(
            python("-m", "tests.backend.bookings_support", "seed"),
            input=json.dumps(spec),
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def users(self, n: int, *, staff: bool = False) -> list[User]:
        """n users never used before (from a pool seeded in bulk, topped up when it runs low)."""
        pool = self.staff_pool if staff else self.user_pool
        if len(pool) < n:
            data = self.seed({"users": max(n, 100), "staff": staff})
            pool.extend(User(**u) for u in data["users"])
        taken, pool[:] = pool[:n], pool[n:]
        return taken

    def tour(
        self, *, capacity: int = 10, shard: int = 0, starts_in_days: int = 30, price: str = "50.00"
    ) -> str:
        """A new tour on shard `shard` (written straight into the shard's tours table)."""
        tour_id = uuid.uuid4()
        while self.shard_of(str(tour_id)) != shard % len(self.shard_urls):
            tour_id = uuid.uuid4()
        start = dt.date.today() + dt.timedelta(days=starts_in_days)
        self.sql(
            shard % len(self.shard_urls),
            "INSERT INTO tours_tour (id, name, description, price, start_date, end_date, "
            "capacity, seats_available, rating, rating_count, created_at, updated_at) "
            "VALUES (%s, %s, '', %s, %s, %s, %s, %s, 0, 0, now(), now())",
            [
                tour_id,
                f"Tour {tour_id.hex[:6]}",
                price,
                start,
                start + dt.timedelta(days=3),
                capacity,
                capacity,
            ],
        )
        return str(tour_id)

    def shard_of(self, tour_id: str) -> int:
        return (uuid.UUID(tour_id).int % 64) % len(self.shard_urls)

    def sql(self, shard: int, query: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.shard_urls[shard], autocommit=True) as conn:
            cur = conn.execute(query, tuple(params))
            return cur.fetchall() if cur.description else []

    def tour_row(self, tour_id: str) -> dict[str, Any]:
        (row,) = self.sql(
            self.shard_of(tour_id),
            "SELECT capacity, seats_available, rating, rating_count FROM tours_tour WHERE id = %s",
            [tour_id],
        )
        return dict(
            zip(("capacity", "seats_available", "rating", "rating_count"), row, strict=True)
        )

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


def build_stack(
    pg_servers: list[Any], work: Path, *, template: str | None = None, replicas: int = REPLICAS
) -> Stack:
    """Fresh databases (copies of a migrated `template`, else migrated here) and replicas."""
    name = f"b_{uuid.uuid4().hex[:12]}"
    if template:
        urls = clone_databases(pg_servers, template, name)
        default_url, shard_urls = urls["DATABASE_URL"], urls["SHARD_URLS"].split(",")
    else:
        created = [server.create_database(name) for server in pg_servers]
        default_url, shard_urls = created[0], created[1:]
    work.mkdir(parents=True, exist_ok=True)
    env = replica_env(
        database_url=default_url,
        shard_urls=shard_urls,
        secret_key=secrets.token_urlsafe(48),  # per test session, never stored
        var_dir=work / "var",
        workers=2,
        threads=4,
        BACKEND_LOG_LEVEL="WARNING",
        JWT_ACCESS_SECONDS="3600",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(work / "mail"),
        GUNICORN_LOG_LEVEL="warning",
        GUNICORN_GRACEFUL_TIMEOUT="3",
    )
    stack = Stack(env=env, urls=[], shard_urls=shard_urls, work=work)
    if not template:
        migrated = stack.run("backend", "migrate_all", "-v", "0", timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
    stack.user_pool.extend(User(**u) for u in stack.seed({"users": 800})["users"])
    ports = [free_port() for _ in range(replicas)]
    stack.urls = start_replicas(env, ports, work, stack.processes)
    return stack


_STACKS: dict[str, Stack] = {}


@pytest.fixture(scope="session", name="booking_stack")
def booking_stack_fixture(
    request: pytest.FixtureRequest, pg_servers: list[Any], work_dir: Path, migrated_template: str
) -> Stack:
    """The shared stack (built once per session even though several modules import this)."""
    if "stack" not in _STACKS:
        stack = build_stack(pg_servers, work_dir / "booking-stack", template=migrated_template)
        _STACKS["stack"] = stack
        # session-scoped: stopped at session end, before the servers it depends on
        request.addfinalizer(stack.stop)
    return _STACKS["stack"]


# --- HTTP helpers (asyncio + aiohttp; every request to 127.0.0.1) -------------------------


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    user: User | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    all_headers = {**(user.headers if user else {}), **(headers or {})}
    async with session.request(method, url, json=json_body, headers=all_headers) as resp:
        text = await resp.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return Reply(resp.status, body, dict(resp.headers))


def request(stack: Stack, method: str, path: str, **kwargs: Any) -> Reply:
    """One request to the first replica (synchronous wrapper for simple steps)."""

    async def one() -> Reply:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            return await call(session, method, stack.url + path, **kwargs)

    return asyncio.run(one())


def book(stack: Stack, user: User, tour: str, seats: int = 1, **kwargs: Any) -> Reply:
    return request(
        stack,
        "POST",
        "/api/bookings/",
        user=user,
        json_body={"tour": tour, "seats": seats},
        **kwargs,
    )


def verify(stack: Stack) -> subprocess.CompletedProcess[str]:
    return stack.run("loadtest.verify")


# --- seeding, run inside the backend's configuration -------------------------------------


def _seed(spec: dict[str, Any]) -> dict[str, Any]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    out: dict[str, Any] = {"users": []}
    n = int(spec.get("users", 0))
    if n:
        model = get_user_model()
        tag = uuid.uuid4().hex[:10]
        users = [
            model(
                username=f"u{tag}{i}",
                email=f"u{tag}{i}@example.test",
                is_staff=spec.get("staff", False),
            )
            for i in range(n)
        ]
        for user in users:
            user.set_unusable_password()  # tokens are minted directly: no slow hashing
        model.objects.bulk_create(users)
        for user in model.objects.filter(username__startswith=f"u{tag}").order_by("id"):
            token = str(AccessToken.for_user(user))
            out["users"].append({"id": user.pk, "username": user.username, "token": token})
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["seed"]:
        print(json.dumps(_seed(json.loads(sys.stdin.read()))))
    else:
        sys.exit("usage: python -m tests.backend.bookings_support seed < spec.json")
