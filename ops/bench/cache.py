"""`python -m ops.bench cache`: browsing through the lb with the micro-cache off and on.

The stack on PostgreSQL (default + 2 shards) and Redis (lb buckets, backend cache, purge
orders): gunicorn replicas, the lb with LB_WORKERS workers trusting 127.0.0.1 for
X-Forwarded-For, so the load presents many client addresses (each its own bucket). For the
cache off and then on, in one run:

  closed   wrk (a Lua script: the browse mix, a client address per request) at a fixed
           number of connections: the most the stack answers
  open     requests at a fixed rate (default 5 x the uncached closed-loop rate) from an
           asyncio client, latency measured from when each request was due

The browse mix: tour list pages, searches, and tour pages of a hot few (Zipf-like). Printed:
req/s, p50/p99, 2xx share, 429s, the cache's hit ratio, the replicas' CPU per request; then
the freshness lag: from a booking's 201 to the first answer through the lb with the new seat
count (new connections, so every worker is asked). Everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.bench import bookings
from ops.bench.common import bench, launch_lb
from ops.bench.load import WRK, cpu_seconds
from ops.servers import RedisServer

SEARCHES = ("bench", "black", "friday", "tour", "sea", "city", "alps", "river")
HIT_RESULTS = ("hit", "stale_revalidate", "stale_error", "coalesced")


@dataclass
class Figures:
    label: str
    rps: float
    p50_ms: float
    p95_ms: float | None
    p99_ms: float
    ok_share: float
    rejected: int
    hit_ratio: float | None
    replica_cpu_us: float | None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.bench cache", description=__doc__)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per replica")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--lb-workers", type=int, default=2)
    parser.add_argument("--tours", type=int, default=40)
    parser.add_argument("--connections", type=int, default=64, help="closed loop")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--clients", type=int, default=5000, help="distinct client addresses")
    parser.add_argument("--open-rate", type=float, default=0.0, help="default: 5 x uncached")
    parser.add_argument("--cache-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--freshness-samples", type=int, default=5)
    parser.add_argument("--client-processes", type=int, default=2, help="open-loop senders")
    return parser.parse_args(argv)


def browse_paths(tours: list[str], count: int, rng: random.Random) -> list[str]:
    """A browse mix: 30% list pages, 20% searches, 50% tour pages skewed to a hot few."""
    weights = [1 / (i + 1) for i in range(len(tours))]
    paths = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.3:
            page = rng.choice(("", "", "", "?page=2", "?ordering=price"))
            paths.append(f"/api/tours/{page}")
        elif roll < 0.5:
            paths.append(f"/api/tours/?search={rng.choice(SEARCHES)}")
        else:
            paths.append(f"/api/tours/{rng.choices(tours, weights)[0]}/")
    return paths


WRK_SCRIPT = """
local paths = {%s}
local clients = %d
math.randomseed(%d)
request = function()
  local path = paths[math.random(#paths)]
  local n = math.random(clients)
  local ip = string.format("10.%%d.%%d.%%d", math.floor(n / 65536) %% 256,
                           math.floor(n / 256) %% 256, n %% 256)
  return wrk.format("GET", path, {["X-Forwarded-For"] = ip})
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH %%d %%d %%d %%f %%f\\n", summary.requests,
    summary.errors.status, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def closed_loop(
    url: str, paths: list[str], args: argparse.Namespace
) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, non-2xx) from wrk with the browse mix."""
    if WRK is None:
        return asyncio.run(_python_closed(url, paths, args))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        quoted = ",".join(json.dumps(p) for p in paths[:2000])
        script.write(WRK_SCRIPT % (quoted, args.clients, 7))
    done = subprocess.run(
        [
            WRK,
            "-t2",
            f"-c{args.connections}",
            f"-d{max(1, round(args.duration))}s",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=args.duration + 60,
    )
    Path(script.name).unlink()
    match = re.search(r"BENCH (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", done.stdout)
    if match is None:
        raise RuntimeError(f"wrk said: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    requests, bad, micros, p50, p99 = match.groups()
    return int(requests) / (int(micros) / 1e6), float(p50) / 1000, float(p99) / 1000, int(bad)


async def _python_closed(
    url: str, paths: list[str], args: argparse.Namespace
) -> tuple[float, float, float, int]:
    import aiohttp

    rng = random.Random(7)
    latencies: list[float] = []
    bad = 0
    stop = time.monotonic() + args.duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal bad
        while time.monotonic() < stop:
            began = time.monotonic()
            headers = {"X-Forwarded-For": f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}"}
            async with session.get(url + rng.choice(paths), headers=headers) as resp:
                await resp.read()
                bad += resp.status >= 300
            latencies.append(time.monotonic() - began)

    began = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.connections)))
    latencies.sort()
    return (
        len(latencies) / (time.monotonic() - began),
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        bad,
    )


def open_loop(
    url: str, paths: list[str], rate: float, args: argparse.Namespace
) -> tuple[float, float, float, float, int, int]:
    """Requests due at a fixed rate, from `--client-processes` processes (one Python client
    cannot send a few thousand a second); latency from when each was due (no coordinated
    omission). (req/s answered, p50, p95, p99 ms, non-2xx, 429s)."""
    from concurrent.futures import ProcessPoolExecutor

    n = args.client_processes
    with ProcessPoolExecutor(max_workers=n) as pool:
        parts = list(
            pool.map(
                _open_part,
                [url] * n,
                [paths] * n,
                [rate / n] * n,
                [args.duration] * n,
                range(n),
            )
        )
    latencies = sorted(x for part in parts for x in part[0])
    statuses = [x for part in parts for x in part[1]]
    elapsed = max(part[2] for part in parts)
    ok = sum(1 for s in statuses if 200 <= s < 300)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000

    return ok / elapsed, pct(0.5), pct(0.95), pct(0.99), len(statuses) - ok, statuses.count(429)


def _open_part(
    url: str, paths: list[str], rate: float, duration: float, part: int
) -> tuple[list[float], list[int], float]:
    return asyncio.run(_open_async(url, paths, rate, duration, part))


async def _open_async(
    url: str, paths: list[str], rate: float, duration: float, part: int
) -> tuple[list[float], list[int], float]:
    import aiohttp

    rng = random.Random(11 + part)
    total = int(rate * duration)
    latencies: list[float] = []
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()

        async def one(i: int) -> None:
            due = start + i / rate
            n = part * 1_000_003 + i
            headers = {"X-Forwarded-For": f"10.{n % 251}.{(n // 251) % 256}.{1 + n % 253}"}
            try:
                async with session.get(url + rng.choice(paths), headers=headers) as resp:
                    await resp.read()
                    statuses.append(resp.status)
            except (aiohttp.ClientError, TimeoutError):
                statuses.append(0)
            latencies.append(time.monotonic() - due)

        tasks = []
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return latencies, statuses, time.monotonic() - start


def cache_counts(admin: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for name, value in re.findall(r'^lb_cache_requests_total\{result="(\w+)"\} (\S+)$', text, re.M):
        counts[name] = float(value)
    return counts


def hit_ratio(before: dict[str, float], after: dict[str, float]) -> float | None:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    looked = sum(delta.values())
    if not looked:
        return None
    return sum(delta.get(k, 0) for k in HIT_RESULTS) / looked


def replica_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def freshness(lb: str, token: str, tour: str, samples: int) -> list[float]:
    """Seconds from a booking's 201 to the new seat count through the lb: every read on a new
    connection (so both workers answer) and from its own client address (admission)."""
    import requests

    addresses = iter(f"10.250.{i // 250}.{1 + i % 250}" for i in range(10**6))

    def seats() -> int | None:
        got = requests.get(
            f"{lb}/api/tours/{tour}/",
            headers={"Connection": "close", "X-Forwarded-For": next(addresses)},
            timeout=10,
        )
        return int(got.json()["seats_available"]) if got.status_code == 200 else None

    def book(method: str, path: str, body: dict[str, Any] | None) -> requests.Response:
        return requests.request(
            method,
            f"{lb}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": next(addresses)},
            timeout=30,
        )

    lags = []
    for _ in range(samples):
        before = None
        for _ in range(5):  # the entry is cached (and hot) before the booking
            before = seats() or before
        booked = book("POST", "/api/bookings/", {"tour": tour, "seats": 1})
        if booked.status_code != 201 or before is None:
            raise RuntimeError(f"booking failed: {booked.status_code} {booked.text}")
        created = time.monotonic()
        while time.monotonic() - created < 5 and seats() != before - 1:
            pass
        lags.append(time.monotonic() - created)
        book("POST", f"/api/bookings/{booked.json()['id']}/cancel/", None).raise_for_status()
        time.sleep(0.2)
    return lags


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    ns = argparse.Namespace(replicas=args.replicas, workers=args.workers, threads=args.threads)
    stack = bookings.Bench(ns)
    redis = RedisServer(stack.work / "redis")
    rows: list[Figures] = []
    lags: list[float] = []
    try:
        redis.start()
        # the replicas share their list cache and publish purge orders over Redis (db 1)
        stack.extra = {"REDIS_URL": redis.url.replace("/0", "/1")}
        stack.start()
        seeded = bookings.seed(
            stack.env, args.freshness_samples + 1, [(1000, i % 2) for i in range(args.tours)]
        )
        tours: list[str] = seeded["tours"]
        token: str = seeded["tokens"][0]
        paths = browse_paths(tours, 4000, random.Random(3))
        pids = [p.pid for p in stack.replicas]
        print(
            f"cache bench: {args.replicas} replicas x {args.workers} gunicorn workers x "
            f"{args.threads} threads, lb {args.lb_workers} workers, PostgreSQL + Redis, "
            f"{args.tours} tours, {args.clients} client addresses, {args.duration:g} s per run",
            flush=True,
        )
        uncached_rps = 0.0
        with bench() as b:
            for mode, size in (("off", 0), ("on", args.cache_bytes)):
                port, admin, _ = launch_lb(
                    b,
                    [int(u.rsplit(":", 1)[1]) for u in stack.urls],
                    args.lb_workers,
                    {
                        "LB_CACHE_BYTES": str(size),
                        "REDIS_URL": redis.url,
                        "LB_TRUSTED_PROXIES": "127.0.0.1/32",
                        "BUCKET_CAPACITY": "20",
                        "LEAK_RATE": "10",
                        "LB_RATE_RULES": "",
                    },
                )
                url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
                closed_loop(url, paths, argparse.Namespace(**{**vars(args), "duration": 2.0}))
                before, cpu0 = cache_counts(admin_url), replica_cpu(pids)
                rps, p50, p99, bad = closed_loop(url, paths, args)
                answered = rps * args.duration
                after, cpu1 = cache_counts(admin_url), replica_cpu(pids)
                rows.append(
                    Figures(
                        f"closed, cache {mode}",
                        rps,
                        p50,
                        None,
                        p99,
                        1 - bad / answered if answered else 0.0,
                        -1,
                        hit_ratio(before, after),
                        (cpu1 - cpu0) / answered * 1e6 if answered else None,
                    )
                )
                print(table(rows[-1:], head=False), flush=True)
                if mode == "off":
                    uncached_rps = rps
                rate = args.open_rate or 5 * uncached_rps
                before, cpu0 = cache_counts(admin_url), replica_cpu(pids)
                orps, op50, op95, op99, obad, rejected = open_loop(url, paths, rate, args)
                after, cpu1 = cache_counts(admin_url), replica_cpu(pids)
                sent = rate * args.duration
                rows.append(
                    Figures(
                        f"open {rate:.0f}/s, cache {mode}",
                        orps,
                        op50,
                        op95,
                        op99,
                        1 - obad / sent,
                        rejected,
                        hit_ratio(before, after),
                        (cpu1 - cpu0) / sent * 1e6,
                    )
                )
                print(table(rows[-1:], head=False), flush=True)
                if mode == "on":
                    lags = freshness(url, token, tours[0], args.freshness_samples)
                b.stop(b.procs[-1])
    finally:
        stack.close()
        redis.stop()
    print(table(rows))
    if lags:
        print(
            f"freshness lag (booking 201 -> new seat count through the lb, cache on): "
            f"max {max(lags) * 1000:.0f} ms, median {sorted(lags)[len(lags) // 2] * 1000:.0f} ms "
            f"over {len(lags)} bookings"
        )
    return 0


def table(rows: list[Figures], head: bool = True) -> str:
    header = f"{'run':<26}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'2xx':>8}{'429s':>7}{'hit ratio':>11}{'replica cpu us/req':>20}"
    lines = [header, "-" * len(header)] if head else []
    for r in rows:
        hit = "-" if r.hit_ratio is None else f"{r.hit_ratio:.1%}"
        cpu = "-" if r.replica_cpu_us is None else f"{r.replica_cpu_us:.0f}"
        rejected = "-" if r.rejected < 0 else str(r.rejected)
        p95 = "-" if r.p95_ms is None else f"{r.p95_ms:.2f}"
        lines.append(
            f"{r.label:<26}{r.rps:>9.0f}{r.p50_ms:>9.2f}{p95:>9}{r.p99_ms:>9.2f}{r.ok_share:>8.1%}{rejected:>7}{hit:>11}{cpu:>20}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
