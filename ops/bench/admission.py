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
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from ops.bench.common import (
    NGINX,
    OPEN_ADMISSION,
    Bench,
    bench,
    launch_lb,
    start_nginx_backends,
)
from ops.bench.load import (
    WRK,
    Result,
    cpu_seconds,
    measure,
    run_load,
    table,
)
from ops.servers import RedisServer

GOAL = 0.90  # Redis buckets keep at least 90% of the in-process throughput
CHECKS = 64 * 2000  # in-process CPU measurement: 64 concurrent requesters, 2000 checks each


def check_cpu(redis_url: str | None, redis_pid: int | None) -> tuple[float, float | None]:
    """CPU microseconds per admission check in this process, and in Redis (if any).

    CPU time, unlike throughput, hardly depends on what else the machine is doing.
    """
    import asyncio

    import uvloop
    from prometheus_client import CollectorRegistry

    from lb.admission.service import build_admission
    from lb.config import admission_options, load_settings

    env = dict(OPEN_ADMISSION)
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["LB_REDIS_TIMEOUT"] = "1"

    async def run() -> tuple[float, float | None]:
        admission = build_admission(admission_options(load_settings(env)), CollectorRegistry())
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


def start(
    b: Bench, backends: list[int], workers: int, redis_url: str | None
) -> tuple[int, int, int]:
    """An lb with wide-open buckets, in-process or in Redis: (port, admin port, pid)."""
    return launch_lb(b, backends, workers, {"REDIS_URL": redis_url} if redis_url else None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench admission", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--workers", type=int, default=1, help="lb worker processes (1)")
    args = parser.parse_args(argv)

    local_name, shared_name = "lb, in-process buckets", "lb, Redis buckets"
    runs: dict[str, list[Result]] = {local_name: [], shared_name: []}
    redis_us: list[float] = []  # Redis server CPU per request, during each Redis run
    with bench() as b:
        redis = RedisServer(Path(b.dir) / "redis").start()
        assert redis.proc is not None
        try:
            backends = start_nginx_backends(b, 2)
            setups = {
                local_name: start(b, backends, args.workers, None),
                shared_name: start(b, backends, args.workers, redis.url),
            }
            for port, _, _ in setups.values():  # warm-up: connections, script load
                run_load(f"http://127.0.0.1:{port}/bench", connections=8, duration=1)
            for round_no in range(args.rounds):
                for name, (port, _, pid) in setups.items():
                    print(f"round {round_no + 1}: {name} ...", file=sys.stderr, flush=True)
                    redis_before = cpu_seconds(redis.proc.pid)
                    result = measure(
                        f"http://127.0.0.1:{port}/bench",
                        pid,
                        connections=args.connections,
                        duration=args.duration,
                    )
                    runs[name].append(result)
                    if name == shared_name:
                        spent = cpu_seconds(redis.proc.pid) - redis_before
                        requests = max(1.0, result.rps * args.duration)
                        redis_us.append(spent / requests * 1e6)
            modes = {name: status(admin)["admission"] for name, (_, admin, _) in setups.items()}
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
        f"{args.rounds} alternating rounds of {args.duration:g} s (best shown), {tool}, "
        f"backends: 2 x {backend_kind}, nothing rejected"
    )
    best = {name: max(results, key=lambda r: r.rps) for name, results in runs.items()}
    print(table(list(best.items()), local_name))
    for name, admission in modes.items():
        assert isinstance(admission, dict)
        print(f"{name}: mode={admission.get('mode')}")
    print(f"Redis server CPU per request: {statistics.median(redis_us):.1f} us (median)")

    print(f"\nCPU per admission check alone ({CHECKS} checks from 64 concurrent requesters):")
    for name, (own, server) in cpu.items():
        extra = f", Redis server {server:.1f} us" if server is not None else ""
        print(f"  {name:<20} lb {own:.1f} us{extra}")

    pairs = list(zip(runs[local_name], runs[shared_name], strict=True))
    rps_ratios = [sh.rps / lo.rps for lo, sh in pairs if lo.rps]
    rps_ratio = statistics.median(rps_ratios or [0.0])
    # on a CPU-bound machine capacity is 1 / CPU per request; this barely feels others' load
    cpu_ratios = [
        lo.cpu_us / (sh.cpu_us + spent)
        for (lo, sh), spent in zip(pairs, redis_us, strict=True)
        if lo.cpu_us and sh.cpu_us
    ]
    print(
        "\nper-round throughput ratios Redis / in-process: "
        + ", ".join(f"{r:.2f}" for r in rps_ratios)
    )
    for label, ratio in (
        ("throughput (median of rounds)", rps_ratio),
        ("CPU per request, lb + Redis (median)", statistics.median(cpu_ratios or [0.0])),
    ):
        verdict = "ok" if ratio >= GOAL else "BELOW GOAL"
        print(
            f"Redis admission keeps {ratio:.1%} of in-process capacity by {label}: "
            f"cost {1 - ratio:.1%} (goal <= {1 - GOAL:.0%}) {verdict}"
        )
    return 0
