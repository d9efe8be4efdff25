"""`python -m ops.bench overload`: the stack past its capacity, the lb next to HAProxy.

Starts throwaway PostgreSQL servers (default + 2 shards) and Redis, gunicorn replicas of
the backend (1 worker x 8 threads each, as `ops up` runs them), seeds tours and users with
tokens, then, for each proxy in front of the same replicas:

  lb        `python -m lb` (Redis buckets, LB_TRUSTED_PROXIES=127.0.0.1/32), no tuning
  lb-local  the same with in-process buckets (no REDIS_URL), as `ops up` runs it without
            --redis: no Redis round trip, and its bodiless requests take the fast path
  lb-cache  the lb with its micro-cache on (LB_CACHE_BYTES), driven at multiples of the
            uncached lb's capacity: what the platform does with browse traffic on sale day
  haproxy   HAProxy with the usual hand-tuned protection: `maxconn` per server + `timeout queue`

measures capacity (closed loop, 64 in flight, browse), then offers an open-loop mix at
0.8x, 1.5x, 3x and 10x that capacity: browse (list, detail, search) plus a checkout share
(book a hot tour, then pay it, with pre-created users), each request from one of thousands
of client addresses (X-Forwarded-For). Per run it prints offered and goodput (and its
checkout share), admitted p50/p95/p99 per class, shed answers (count, p50/p99, the p99 of
those sent after the run's first second, the checkout sheds), other 5xx, replicas marked
unhealthy or ejected, the proxy's memory, how many held bookings were paid, the CPU seconds
the proxy and the client spent, and the audit (`loadtest.verify`). Everything it starts is
stopped at the end, by PID. `--pin` gives the replicas and PostgreSQL half the CPUs and the
proxy, Redis and the client the other half.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop

from ops.bench.bookings import Bench as StackBench
from ops.bench.bookings import seed
from ops.bench.common import Bench, launch_lb
from ops.bench.load import cpu_seconds
from ops.bench.openloop import open_loop, percentile
from ops.bench.rawclient import ClientError, RawClient
from ops.servers import RedisServer, free_port

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
FACTORS = (0.8, 1.5, 3.0, 10.0)
CLIENTS = 5000  # distinct client addresses presented through X-Forwarded-For


@dataclass
class Run:
    proxy: str
    factor: float
    offered: float = 0.0
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"browse": [], "checkout": []}
    )
    shed: list[float] = field(default_factory=list)
    shed_checkout: list[float] = field(default_factory=list)  # the checkout share of `shed`
    shed_later: list[float] = field(default_factory=list)  # those sent after the first second
    began: float = 0.0
    other_5xx: dict[int, int] = field(default_factory=dict)
    other: int = 0
    booked: int = 0
    paid: int = 0
    unhealthy: str = "-"
    memory_mb: float = 0.0
    audit: str = "-"
    proxy_cpu: float = 0.0  # CPU seconds the proxy (all its processes) spent in the run
    client_cpu: float = 0.0  # and the client generating the load

    @property
    def goodput(self) -> float:
        done = sum(len(v) for v in self.latencies.values())
        return done / self.seconds if self.seconds else 0.0

    @property
    def checkout_goodput(self) -> float:
        """The checkout share of the goodput: a booking or a payment costs the backends
        several times a browse, so a proxy that admits more of them answers fewer per second."""
        return len(self.latencies["checkout"]) / self.seconds if self.seconds else 0.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.bench overload", description=__doc__)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each run")
    parser.add_argument("--checkout", type=float, default=0.1, help="share of checkout arrivals")
    parser.add_argument("--factors", default=",".join(str(f) for f in FACTORS))
    parser.add_argument(
        "--proxies",
        default="lb,haproxy",
        help="any of lb, lb-local (in-process buckets), lb-cache, haproxy",
    )
    parser.add_argument(
        "--lb-workers",
        type=int,
        default=2,
        help="lb processes (HAProxy runs one thread per CPU by default: the same share)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the replicas and PostgreSQL on half the CPUs and the proxy, Redis and the "
        "client on the other half, as a deployment gives the lb hosts of its own; without it "
        "the proxy's CPU is CPU the replicas lack",
    )
    parser.add_argument("--haproxy-maxconn", type=int, default=3)
    parser.add_argument("--haproxy-queue-ms", type=int, default=100)
    return parser.parse_args(argv)


def split_cpus() -> tuple[set[int], set[int]]:
    """(front, back): this process's CPUs in two halves, the back half for the stack."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("overload bench: --pin needs at least 2 CPUs")
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


# -- the proxies --------------------------------------------------------------------------------


def start_haproxy(b: Bench, backends: list[int], maxconn: int, queue_ms: int) -> tuple[int, int]:
    """HAProxy as an SRE would set it up by hand; returns (port, pid)."""
    assert HAPROXY is not None
    port, stats = free_port(), free_port()
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} maxconn {maxconn} check inter 2s fall 2 rise 2"
        for i, p in enumerate(backends)
    )
    conf = b.dir / "haproxy.cfg"
    conf.write_text(
        f"""global
    maxconn 4000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 30s
    timeout queue {queue_ms}ms
    option http-keep-alive
frontend public
    bind 127.0.0.1:{port}
    default_backend replicas
frontend stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
backend replicas
    balance leastconn
    option httpchk GET /healthz
{servers}
"""
    )
    proc = b.start("haproxy", [HAPROXY, "-f", str(conf), "-db"], port)
    return port, proc.pid


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children, MiB."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total / 1024


def lb_status(admin: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin}/status", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def haproxy_down(stats_url: str) -> str:
    try:
        with urllib.request.urlopen(stats_url + ";csv", timeout=5) as resp:
            rows = resp.read().decode().splitlines()
    except OSError:
        return "?"
    head = rows[0].lstrip("# ").split(",")
    status = head.index("status")
    down = [
        r.split(",")[1]
        for r in rows[1:]
        if r.startswith("replicas,") and "DOWN" in r.split(",")[status]
    ]
    return str(len(down))


# -- the client ---------------------------------------------------------------------------------


class Client:
    """The open-loop mix against one proxy."""

    def __init__(self, base: str, seeded: dict[str, Any], checkout: float) -> None:
        self.base = base
        address = urlsplit(base)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 80
        self.tokens: list[str] = list(seeded["tokens"])
        self.hot: list[str] = seeded["tours"][:3]
        self.tours: list[str] = seeded["tours"]
        self.checkout = checkout
        self.rng = random.Random(7)
        self.session: Any = None

    def ip(self, i: int) -> str:
        return f"10.{(i % CLIENTS) // 250}.{(i % CLIENTS) % 250}.{1 + i % 200}"

    async def request(
        self,
        run: Run,
        klass: str,
        method: str,
        path: str,
        i: int,
        token: str = "",
        body: dict[str, Any] | None = None,
    ) -> tuple[int, Any, str | None]:
        headers = {"X-Forwarded-For": self.ip(i), "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        started = time.monotonic()
        try:
            answer = await self.session.request(method, path, headers, data)
        except (ClientError, TimeoutError, OSError):
            run.other += 1
            return 0, None, None
        status, data, retry_after = answer.status, answer.body, answer.headers.get("retry-after")
        seconds = time.monotonic() - started
        payload: Any = None
        if data[:1] == b"{":
            try:
                payload = json.loads(data)
            except ValueError:
                payload = None
        code = payload.get("code") if isinstance(payload, dict) else None
        if 200 <= status < 300:
            run.latencies[klass].append(seconds)
        elif status == 503 and code in ("overloaded", None):
            run.shed.append(seconds)  # the lb's 503 overloaded; HAProxy's queue timeout (HTML)
            if klass == "checkout":
                run.shed_checkout.append(seconds)
            if started - run.began >= 1.0:  # past the onset: a queue takes a moment to stand
                run.shed_later.append(seconds)
        elif status >= 500:
            run.other_5xx[status] = run.other_5xx.get(status, 0) + 1
        elif status not in (409, 429):
            run.other += 1
        return status, payload, retry_after

    async def arrival(self, run: Run, i: int) -> None:
        if self.tokens and self.rng.random() < self.checkout:
            token = self.tokens.pop()
            tour = self.rng.choice(self.hot)
            status, booking, _ = await self.request(
                run, "checkout", "POST", "/api/bookings/", i, token, {"tour": tour, "seats": 1}
            )
            if status != 201 or not isinstance(booking, dict):
                return
            run.booked += 1
            for _attempt in range(3):  # a user holding a booking insists on paying it
                status, _, retry_after = await self.request(
                    run,
                    "checkout",
                    "POST",
                    f"/api/bookings/{booking['id']}/pay/",
                    i,
                    token,
                    {"card_number": "4242 4242 4242 4242"},
                )
                if status == 200:
                    run.paid += 1
                    return
                if status not in (503, 429):
                    return
                await asyncio.sleep(min(2.0, float(retry_after or 1)))
            return
        roll = self.rng.random()
        if roll < 0.4:
            await self.request(run, "browse", "GET", "/api/tours/", i)
        elif roll < 0.6:
            await self.request(run, "browse", "GET", "/api/tours/?search=bench", i)
        else:
            await self.request(
                run, "browse", "GET", f"/api/tours/{self.rng.choice(self.tours)}/", i
            )

    async def closed_loop(self, seconds: float, concurrency: int = 64) -> float:
        """Browse capacity: answered 2xx per second with `concurrency` in flight."""
        run = Run("capacity", 0)
        stop = time.monotonic() + seconds
        self.session = RawClient(self.host, self.port)
        try:

            async def user(u: int) -> None:
                n = 0
                while time.monotonic() < stop:
                    n += 1
                    await self.request(
                        run,
                        "browse",
                        "GET",
                        f"/api/tours/{self.rng.choice(self.tours)}/",
                        u * 1000 + n,
                    )

            began = time.monotonic()
            await asyncio.gather(*(user(u) for u in range(concurrency)))
            run.seconds = time.monotonic() - began
        finally:
            await self.session.close()
        return run.goodput

    async def open(self, run: Run, rate: float, seconds: float) -> None:
        # a lean client (ops/bench/rawclient.py): aiohttp's would need more than a core at
        # 10x and measure its own lag
        self.session = RawClient(self.host, self.port, timeout=30)
        try:
            run.began = time.monotonic()
            spent = await open_loop(rate, seconds, lambda i, due: self.arrival(run, i))
        finally:
            await self.session.close()
        run.offered = int(rate * seconds) / spent
        run.seconds = spent


# -- one proxy ------------------------------------------------------------------------------------


def bench_proxy(
    name: str,
    port: int,
    pid: int,
    seeded: dict[str, Any],
    args: argparse.Namespace,
    stack: StackBench,
    health: Any,
    capacities: dict[str, float],
) -> list[Run]:
    base = f"http://127.0.0.1:{port}"
    warm = Client(base, {"tokens": [], "tours": seeded["tours"]}, 0)
    uvloop.run(warm.closed_loop(3.0))
    capacity = capacities[name] = uvloop.run(warm.closed_loop(8.0))
    print(f"{name}: capacity {capacity:.0f} req/s (closed loop, 64 in flight, browse)", flush=True)
    if name == "lb-cache" and "lb" in capacities:
        # the same offered loads as the uncached lb: the cache's gain shows as goodput
        capacity = capacities["lb"]
        print(f"{name}: driven at multiples of the uncached lb's {capacity:.0f} req/s", flush=True)
    runs = []
    factors = [float(f) for f in args.factors.split(",") if f.strip()]
    for factor in factors:
        client = Client(base, seeded, args.checkout)
        run = Run(name, factor)
        proxy_before, client_before = cpu_seconds(pid), time.process_time()
        uvloop.run(client.open(run, capacity * factor, args.seconds))
        run.proxy_cpu = cpu_seconds(pid) - proxy_before
        run.client_cpu = time.process_time() - client_before
        seeded["tokens"] = client.tokens  # each user books once
        run.unhealthy = health()
        run.memory_mb = rss_mb(pid)
        run.audit = stack.verify()
        runs.append(run)
        print(row(run), flush=True)
        time.sleep(2.0)  # let the queues drain before the next run
    return runs


HEAD = (
    f"{'proxy':<8}{'x cap':>6}{'offered':>9}{'goodput':>9}{'checkout':>9}"
    f"{'browse p50/p95/p99 ms':>24}{'checkout p50/p95/p99 ms':>26}"
    f"{'shed':>7}{'p50/p99':>9}{'after 1s':>9}{'checkout':>14}{'5xx':>6}{'down':>5}{'paid/held':>11}{'MiB':>6}"
    f"{'cpu s':>11}  audit"
)


def row(r: Run) -> str:
    def pcts(values: list[float]) -> str:
        if not values:
            return "-"
        return "/".join(f"{percentile(values, q) * 1000:.0f}" for q in (0.5, 0.95, 0.99))

    other = sum(r.other_5xx.values())
    paid = f"{r.paid}/{r.booked}"

    def shed_pcts(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{percentile(values, 0.5) * 1000:.0f}/{percentile(values, 0.99) * 1000:.0f}"

    shed = shed_pcts(r.shed)
    later = f"{percentile(r.shed_later, 0.99) * 1000:.0f}" if r.shed_later else "-"
    checkout = f"{len(r.shed_checkout)} {shed_pcts(r.shed_checkout)}"
    cpu = f"{r.proxy_cpu:.1f}/{r.client_cpu:.1f}"
    return (
        f"{r.proxy:<8}{r.factor:>6.1f}{r.offered:>9.0f}{r.goodput:>9.0f}{r.checkout_goodput:>9.0f}"
        f"{pcts(r.latencies['browse']):>24}{pcts(r.latencies['checkout']):>26}"
        f"{len(r.shed):>7}{shed:>9}{later:>9}{checkout:>14}{other:>6}{r.unhealthy:>5}{paid:>11}{r.memory_mb:>6.0f}"
        f"{cpu:>11}  {r.audit}"
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    if "haproxy" in proxies and HAPROXY is None:
        print(
            "overload bench: haproxy is not installed (./dev installs it); skipping it",
            file=sys.stderr,
        )
        proxies.remove("haproxy")
    stack_args = argparse.Namespace(replicas=args.replicas, workers=1, threads=8)
    stack = StackBench(stack_args)
    front, back = split_cpus() if args.pin else (None, None)
    redis: RedisServer | None = None
    runs: list[Run] = []
    capacities: dict[str, float] = {}  # closed-loop capacity per proxy
    with_procs = Bench()
    try:
        if front is not None:
            os.sched_setaffinity(0, front)  # Redis: the lb's buckets live with the lb
        redis = RedisServer(stack.work / "redis").start()
        # the replicas' cache in Redis too (db 1, as in compose); the lb's buckets in db 0
        stack.extra = {"REDIS_URL": redis.url.rsplit("/", 1)[0] + "/1"}
        if back is not None:
            os.sched_setaffinity(0, back)  # inherited by PostgreSQL and the replicas
        stack.start()
        seeded = seed(
            stack.env,
            20000,
            [(100000, 0), (100000, 1), (100000, 0)] + [(50, i % 2) for i in range(17)],
        )
        ports = [int(u.rsplit(":", 1)[1]) for u in stack.urls]
        if front is not None:
            os.sched_setaffinity(0, front)  # the client, and the proxies it starts from now
            print(
                f"pinned: replicas and PostgreSQL on CPUs {sorted(back or ())}, "
                f"proxy, Redis and client on {sorted(front)}",
                flush=True,
            )
        print(
            f"overload bench: {args.replicas} replicas x 1 worker x 8 threads, PostgreSQL default + 2 shards, "
            f"Redis, {os.cpu_count()} CPUs (shared machine: figures move with the neighbours' load)",
            flush=True,
        )
        for name in proxies:
            if name in ("lb", "lb-cache", "lb-local"):
                port, admin, pid = launch_lb(
                    with_procs,
                    ports,
                    workers=args.lb_workers,
                    env={
                        # lb-local: buckets in each lb process (and its fast path)
                        "REDIS_URL": "" if name == "lb-local" else redis.url,
                        "LB_TRUSTED_PROXIES": "127.0.0.1/32",
                        "BUCKET_CAPACITY": "20",
                        "LEAK_RATE": "10",
                        "LB_RATE_RULES": "",
                        "LB_CACHE_BYTES": str(64 << 20) if name == "lb-cache" else "0",
                    },
                )

                def health(admin: int = admin) -> str:
                    status = lb_status(admin)
                    limits = ", ".join(
                        f"{b['limit']} (minRTT {b['min_rtt_ms']:.0f} ms, now {b['sample_rtt_ms']:.0f} ms)"
                        for b in status["overload"]["backends"]
                    )
                    print(f"  lb limits per replica: {limits}", flush=True)
                    rows = status["backends"]
                    return str(sum(1 for b in rows if not b["healthy"] or b["ejections"]))

            else:
                port, pid = start_haproxy(
                    with_procs, ports, args.haproxy_maxconn, args.haproxy_queue_ms
                )
                conf = (with_procs.dir / "haproxy.cfg").read_text()
                stats_port = int(conf.split("frontend stats\n    bind 127.0.0.1:")[1].split()[0])

                def health(stats_port: int = stats_port) -> str:
                    return haproxy_down(f"http://127.0.0.1:{stats_port}/stats")

            before = cpu_seconds(pid)
            runs += bench_proxy(name, port, pid, seeded, args, stack, health, capacities)
            print(f"{name}: {cpu_seconds(pid) - before:.1f} CPU seconds in the proxy", flush=True)
            for proc in list(with_procs.procs):
                with_procs.stop(proc)
    finally:
        with_procs.close()
        if redis is not None:
            redis.stop()
        stack.close()
    print()
    print(HEAD)
    print("-" * len(HEAD))
    for r in runs:
        print(row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
