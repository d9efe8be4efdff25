"""`python -m ops.bench bookings`: committed bookings per second, one hot tour vs many tours.

Starts throwaway PostgreSQL servers (default + 2 shards, ops/servers.py) and gunicorn replicas
of the backend, seeds distinct users (one booking per user and tour) with minted JWTs, then
fires POST /api/bookings/ from an asyncio + aiohttp client at a fixed concurrency:

  hot      every booking on ONE tour (one row every transaction updates: the contention case)
  spread   the same number of bookings over many tours on both shards
  soldout  every attempt on one tour with seats for a quarter of them: the rest must get 409

After each run `python -m loadtest.verify` audits the invariants. Prints one table row per run.
Everything it starts is stopped at the end (by PID); nothing is left on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.processes import Process
from ops.replicas import replica_env, start_replicas
from ops.servers import PostgresServer, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunResult:
    name: str
    tours: int
    capacity: int
    attempts: int
    created: int
    sold_out: int
    other: int
    seconds: float
    p50_ms: float
    p99_ms: float
    audit: str

    @property
    def rate(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0

    @property
    def answered(self) -> float:
        return self.attempts / self.seconds if self.seconds else 0.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.bench bookings", description=__doc__)
    parser.add_argument("--bookings", type=int, default=3000, help="attempts per run")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per replica")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    parser.add_argument("--spread-tours", type=int, default=200)
    parser.add_argument(
        "--hot-seats", type=int, default=0, help="hot tour capacity (default: = --bookings)"
    )
    parser.add_argument(
        "--runs", default="hot,spread,soldout", help="comma-separated: hot,spread,soldout"
    )
    args = parser.parse_args(argv)
    for name in ("bookings", "concurrency", "replicas", "workers", "threads", "spread_tours"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


class Bench:
    """Owns the servers and replicas it starts; `close()` stops exactly those."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-bookings-"))
        os.chmod(self.work, 0o755)
        self.servers: list[PostgresServer] = []
        self.replicas: list[Process] = []
        self.urls: list[str] = []
        self.env: dict[str, str] = {}
        self.extra: dict[
            str, str
        ] = {}  # more replica variables (e.g. REDIS_URL), set before start()

    def start(self) -> None:
        for i in range(3):
            self.servers.append(PostgresServer(self.work / f"pg{i}", port=free_port()).start())
        urls = [server.create_database("bench") for server in self.servers]
        self.env = replica_env(
            database_url=urls[0],
            shard_urls=urls[1:],
            secret_key=secrets.token_urlsafe(48),  # this run only
            var_dir=self.work / "var",
            workers=self.args.workers,
            threads=self.args.threads,
            BACKEND_LOG_LEVEL="WARNING",
            JWT_ACCESS_SECONDS="3600",
            EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
            GUNICORN_LOG_LEVEL="warning",
        )
        self.env.update(self.extra)
        self.manage("migrate_all", "-v", "0")
        ports = [free_port() for _ in range(self.args.replicas)]
        self.urls = start_replicas(self.env, ports, self.work, self.replicas)

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "backend", *args],
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"backend {args[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def verify(self) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "loadtest.verify"],
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode == 0:
            return "OK"
        print(done.stdout[-3000:] + done.stderr[-2000:], file=sys.stderr)
        return "FAILED"

    def close(self) -> None:
        for proc in self.replicas:
            proc.signal(signal.SIGTERM)  # all at once: they shut down side by side
        for proc in self.replicas:
            proc.stop(20)
        for server in self.servers:
            server.stop("immediate")
        shutil.rmtree(self.work, ignore_errors=True)


def seed(env: dict[str, str], users: int, tours: list[tuple[int, int]]) -> dict[str, Any]:
    """Users with tokens and tours [(capacity, shard index)], written with the backend's ORM."""
    code = """
import datetime as dt, json, os, sys, uuid
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
django.setup()
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken
from backend.sharding import shard_aliases, shard_for
from backend.tours.models import Tour
spec = json.load(sys.stdin)
User = get_user_model()
tag = uuid.uuid4().hex[:8]
batch = [User(username=f"b{tag}{i}", email=f"b{tag}{i}@bench.test") for i in range(spec["users"])]
for u in batch:
    u.set_unusable_password()
User.objects.bulk_create(batch, batch_size=1000)
tokens = [str(AccessToken.for_user(u)) for u in User.objects.filter(username__startswith=f"b{tag}")]
aliases = shard_aliases()
start = dt.date.today() + dt.timedelta(days=60)
ids = []
for capacity, shard in spec["tours"]:
    want = aliases[shard % len(aliases)]
    tid = uuid.uuid4()
    while shard_for(tid) != want:
        tid = uuid.uuid4()
    Tour.objects.using(want).create(id=tid, name="bench", price="10.00", start_date=start,
        end_date=start, capacity=capacity, seats_available=capacity)
    ids.append(str(tid))
print(json.dumps({"tokens": tokens, "tours": ids}))
"""
    import json

    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps({"users": users, "tours": tours}),
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"seeding failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


async def fire(
    urls: list[str], jobs: list[tuple[str, str]], concurrency: int
) -> tuple[list[int], list[float], float]:
    """POST every (token, tour) job with `concurrency` in flight; statuses, latencies, seconds."""
    import aiohttp

    statuses: list[int] = []
    latencies: list[float] = []
    queue = iter(enumerate(jobs))
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(session: aiohttp.ClientSession) -> None:
        for i, (token, tour) in queue:
            url = f"{urls[i % len(urls)]}/api/bookings/"
            began = time.perf_counter()
            try:
                async with session.post(
                    url,
                    json={"tour": tour, "seats": 1},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    await resp.read()
                    statuses.append(resp.status)
            except (TimeoutError, aiohttp.ClientError):
                statuses.append(0)
            latencies.append(time.perf_counter() - began)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return statuses, latencies, time.perf_counter() - began


def run(bench: Bench, name: str) -> RunResult:
    args = bench.args
    n = args.bookings
    if name == "hot":
        tours = [(args.hot_seats or n, 0)]
    elif name == "soldout":
        tours = [(max(1, n // 4), 1)]
    else:
        per_tour = -(-n // args.spread_tours)
        tours = [(per_tour, i % 2) for i in range(args.spread_tours)]
    seeded = seed(bench.env, n, tours)
    jobs = [(token, seeded["tours"][i % len(tours)]) for i, token in enumerate(seeded["tokens"])]
    statuses, latencies, seconds = asyncio.run(fire(bench.urls, jobs, args.concurrency))
    latencies.sort()
    return RunResult(
        name=name,
        tours=len(tours),
        capacity=sum(seats for seats, _ in tours),
        attempts=len(jobs),
        created=statuses.count(201),
        sold_out=statuses.count(409),
        other=len(statuses) - statuses.count(201) - statuses.count(409),
        seconds=seconds,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
        audit=bench.verify(),
    )


def warm_up(bench: Bench) -> None:
    """Unmeasured bookings first, so every worker has its connections and code paths warm and
    the first measured run is not charged for it."""
    n = max(50, min(400, bench.args.bookings // 5))
    seeded = seed(bench.env, n, [(n, i % 2) for i in range(2)])
    jobs = [(token, seeded["tours"][i % 2]) for i, token in enumerate(seeded["tokens"])]
    asyncio.run(fire(bench.urls, jobs, bench.args.concurrency))


def table(results: list[RunResult]) -> str:
    head = (
        f"{'run':<8}{'tours':>6}{'seats':>7}{'attempts':>10}{'created':>9}{'409':>6}{'other':>7}"
        f"{'seconds':>9}{'req/s':>7}{'booked/s':>10}{'p50 ms':>8}{'p99 ms':>8}  audit"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.name:<8}{r.tours:>6}{r.capacity:>7}{r.attempts:>10}{r.created:>9}{r.sold_out:>6}{r.other:>7}"
            f"{r.seconds:>9.2f}{r.answered:>7.0f}{r.rate:>10.0f}{r.p50_ms:>8.1f}{r.p99_ms:>8.1f}  {r.audit}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not runs or not set(runs) <= {"hot", "spread", "soldout"}:
        print(f"--runs={args.runs!r}: expected names from hot,spread,soldout", file=sys.stderr)
        return 2
    bench = Bench(args)
    try:
        bench.start()
        print(
            f"bookings bench: {args.replicas} replicas x {args.workers} workers x "
            f"{args.threads} threads, PostgreSQL default + 2 shards, concurrency "
            f"{args.concurrency}, {os.cpu_count()} CPUs",
            flush=True,
        )
        warm_up(bench)
        results = [run(bench, name) for name in runs]
    finally:
        bench.close()
    print(table(results))
    # one seat per attempt: more created bookings than seats would be an oversell
    failed = [r for r in results if r.audit != "OK" or r.other or r.created > r.capacity]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
