"""`python -m ops.bench admission`: the lb with in-process buckets vs Redis buckets, one run.

Both lbs get a capacity so large that nothing is rejected, so the figures show what
admission costs, not what it rejects. Runs alternate (local, Redis, local, Redis, ...)
so that load from elsewhere on the machine hits both alike. The table shows the best round
of each; the verdict uses the median of the per-round ratios (each round's Redis run
against the in-process run just before it), which noise from elsewhere moves least.
Also printed: CPU microseconds per admission check, measured in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from ops.bench.common import (
    NGINX,
    OPEN_ADMISSION,
    WRK,
    Bench,
    Result,
    bench,
    run_load,
    start_nginx_backends,
    table,
    wait_port,
)
from ops.servers import RedisServer, free_port

GOAL = 0.90  # Redis buckets keep at least 90% of the in-process throughput
CHECKS = 64 * 2000  # in-process CPU measurement: 64 concurrent requesters, 2000 checks each


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of process `pid` (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def check_cpu(redis_url: str | None, redis_pid: int | None) -> tuple[float, float | None]:
    """CPU microseconds per admission check in this process, and in Redis (if any).

    CPU time, unlike throughput, hardly depends on what else the machine is doing.
    """
    import asyncio

    import uvloop
    from prometheus_client import CollectorRegistry

    from lb.admission.service import build_admission
    from lb.config import load_settings

    env = dict(OPEN_ADMISSION)
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["LB_REDIS_TIMEOUT"] = "1"

    async def run() -> tuple[float, float | None]:
        admission = build_admission(load_settings(env), CollectorRegistry())
        await admission.start()

        async def requester(i: int) -> None:
            for _ in range(CHECKS // 64):
                await admission.check("GET", "/api/tours/", f"10.0.{i}.1")

        redis_before = cpu_seconds(redis_pid) if redis_pid else None
        before = time.process_time()
        await asyncio.gather(*(requester(i) for i in range(64)))
        own = (time.process_time() - before) / CHECKS * 1e6
        redis_after = cpu_seconds(redis_pid) if redis_pid else None
        mode = admission.status()["mode"]
        await admission.close()
        if redis_url and mode != "redis":
            raise RuntimeError(f"admission fell back to {mode} during the measurement")
        if redis_before is None or redis_after is None:
            return own, None
        return own, (redis_after - redis_before) / CHECKS * 1e6

    return uvloop.run(run())


def status(admin: int) -> dict[str, object]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin}/status", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def start(b: Bench, backends: list[int], workers: int, redis_url: str | None) -> tuple[int, int]:
    """An lb as start_lb() makes it (wide-open buckets), plus its admin port for /status."""
    port, admin = free_port(), free_port()
    env = {
        **OPEN_ADMISSION,
        "LB_LISTEN": f"127.0.0.1:{port}",
        "LB_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "LB_BACKENDS": ",".join(f"http://127.0.0.1:{p}" for p in backends),
        "LB_WORKERS": str(workers),
        "LB_ACCESS_LOG": "0",
        "LB_LOG_LEVEL": "WARNING",
    }
    if redis_url:
        env |= {"REDIS_URL": redis_url}
    proc = b.start(f"lb-{port}", [sys.executable, "-m", "lb"], port, env)
    wait_port(admin, proc)
    time.sleep(0.5 if workers == 1 else 1.0)  # let every worker bind
    return port, admin


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench admission", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--workers", type=int, default=1, help="lb worker processes (1)")
    args = parser.parse_args(argv)

    best: dict[str, Result] = {}
    runs: dict[str, list[Result]] = {}
    with bench() as b:
        redis = RedisServer(Path(b.dir) / "redis").start()
        try:
            backends = start_nginx_backends(b, 2)
            setups = {
                "lb, in-process buckets": start(b, backends, args.workers, None),
                "lb, Redis buckets": start(b, backends, args.workers, redis.url),
            }
            for port, _ in setups.values():  # warm-up: connections, script load
                run_load(f"http://127.0.0.1:{port}/bench", connections=8, duration=1)
            for round_no in range(args.rounds):
                for name, (port, _) in setups.items():
                    print(f"round {round_no + 1}: {name} ...", file=sys.stderr, flush=True)
                    result = run_load(
                        f"http://127.0.0.1:{port}/bench",
                        connections=args.connections,
                        duration=args.duration,
                    )
                    runs.setdefault(name, []).append(result)
                    if name not in best or result.rps > best[name].rps:
                        best[name] = result
            modes = {name: status(admin)["admission"] for name, (_, admin) in setups.items()}
            assert redis.proc is not None
            cpu = {
                "in-process buckets": check_cpu(None, None),
                "Redis buckets": check_cpu(redis.url, redis.proc.pid),
            }
        finally:
            redis.stop()

    tool = "wrk" if WRK else "python client (wrk not installed)"
    backend_kind = "nginx" if NGINX else "aiohttp (nginx not installed)"
    print(
        f"\nadmission bench: {args.workers} lb worker(s), {args.connections} connections, "
        f"{args.rounds} alternating rounds of {args.duration:g} s runs (best shown), {tool}, "
        f"backends: 2 x {backend_kind}, nothing rejected"
    )
    rows: list[tuple[str, Result | None]] = list(best.items())
    print(table(rows, "lb, in-process buckets"))
    for name, admission in modes.items():
        assert isinstance(admission, dict)
        print(f"{name}: mode={admission.get('mode')}")
    print(f"\nCPU per admission check ({CHECKS} checks from 64 concurrent requesters):")
    for name, (own, server) in cpu.items():
        extra = f", Redis server {server:.1f} us" if server is not None else ""
        print(f"  {name:<20} lb {own:.1f} us{extra}")
    ratios = sorted(
        shared.rps / local.rps if local.rps else 0.0
        for local, shared in zip(
            runs["lb, in-process buckets"], runs["lb, Redis buckets"], strict=True
        )
    )
    ratio = statistics.median(ratios)
    verdict = "ok" if ratio >= GOAL else "BELOW GOAL"
    print(
        f"\nper-round ratios Redis / in-process: {', '.join(f'{r:.2f}' for r in ratios)}"
        f"\nRedis admission keeps {ratio:.0%} of in-process throughput (median; cost "
        f"{1 - ratio:.0%}; goal: cost <= {1 - GOAL:.0%}) {verdict}"
    )
    return 0
