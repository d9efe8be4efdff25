"""`python -m ops.bench admission`: the lb with in-process buckets vs Redis buckets, one run.

Both lbs get a capacity so large that nothing is rejected, so the figures show what
admission costs, not what it rejects. Runs alternate (local, Redis, local, Redis, ...)
so that load from elsewhere on the machine hits both alike; the best round of each counts.
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--workers", type=int, default=1, help="lb worker processes (1)")
    args = parser.parse_args(argv)

    best: dict[str, Result] = {}
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
                    if name not in best or result.rps > best[name].rps:
                        best[name] = result
            modes = {name: status(admin)["admission"] for name, (_, admin) in setups.items()}
        finally:
            redis.stop()

    tool = "wrk" if WRK else "python client (wrk not installed)"
    backend_kind = "nginx" if NGINX else "aiohttp (nginx not installed)"
    print(
        f"\nadmission bench: {args.workers} lb worker(s), {args.connections} connections, "
        f"best of {args.rounds} alternating {args.duration:g} s runs, {tool}, "
        f"backends: 2 x {backend_kind}, nothing rejected"
    )
    rows: list[tuple[str, Result | None]] = list(best.items())
    print(table(rows, "lb, in-process buckets"))
    for name, admission in modes.items():
        assert isinstance(admission, dict)
        print(f"{name}: mode={admission.get('mode')}")
    local, shared = best["lb, in-process buckets"], best["lb, Redis buckets"]
    ratio = shared.rps / local.rps if local.rps else 0.0
    verdict = "ok" if ratio >= GOAL else "BELOW GOAL"
    print(
        f"\nRedis admission keeps {ratio:.0%} of in-process throughput "
        f"(cost {1 - ratio:.0%}; goal: cost <= {1 - GOAL:.0%}) {verdict}"
    )
    return 0
