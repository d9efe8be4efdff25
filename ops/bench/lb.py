"""`python -m ops.bench lb`: the lb against a direct backend, nginx and an aiohttp proxy.

One run starts two fast backends, then measures each setup with the same closed-loop load
(wrk -c64 when installed) and prints req/s, p50, p99 and the ratios side by side.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import AsyncIterator, Callable

from ops.bench.common import (
    NGINX,
    Bench,
    bench,
    start_lb,
    start_nginx_backends,
    start_nginx_proxy,
)
from ops.bench.load import (
    WRK,
    Result,
    measure,
    run_load,
    table,
)
from ops.servers import free_port

GOALS = (
    ("lb, 1 worker", "aiohttp proxy", 2.5),
    ("lb, 1 worker", "nginx proxy, 1 worker", 0.35),
    ("lb, 2 workers", "nginx proxy, 1 worker", 0.6),
)


def start_aiohttp_proxy(b: Bench, backends: list[int]) -> int:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "ops.bench.lb",
        "aiohttp-proxy",
        str(port),
        ",".join(map(str, backends)),
    ]
    b.start(f"aiohttp-proxy-{port}", argv, port)
    return port


HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Host",
    )
)


def serve_aiohttp_proxy(port: int, backends: list[int]) -> None:
    """A fair aiohttp reverse proxy: aiohttp's server in front, one aiohttp ClientSession with a
    keep-alive connection pool behind, bodies streamed both ways, on uvloop; the same job as the
    lb's hot path (round robin, X-Forwarded-For, hop-by-hop headers dropped) without admission,
    retries or health checks, so what it measures is the two HTTP/1.1 sides."""
    import aiohttp
    import uvloop
    from aiohttp import web

    targets = itertools.cycle(f"http://127.0.0.1:{p}" for p in backends)

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=60)
        app["session"] = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
        )
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = request.remote or ""
        body = request.content if request.body_exists else None
        async with session.request(
            request.method,
            next(targets) + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def main(argv: list[str]) -> int:
    if argv[:1] == ["aiohttp-proxy"]:
        serve_aiohttp_proxy(int(argv[1]), [int(p) for p in argv[2].split(",")])
        return 0
    parser = argparse.ArgumentParser(prog="python -m ops.bench lb", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--access-log", action="store_true", help="lb with its access log on")
    parser.add_argument("--rounds", type=int, default=2, help="runs per setup; the best counts")
    args = parser.parse_args(argv)

    def load(b: Bench, port: int) -> Result:
        return measure(
            f"http://127.0.0.1:{port}/bench",
            b.pid(port),
            connections=args.connections,
            duration=args.duration,
        )

    lb_env = {"LB_ACCESS_LOG": "1" if args.access_log else "0"}
    best: dict[str, Result | None] = {}
    with bench() as b:
        backends = start_nginx_backends(b, 2)
        setups: list[tuple[str, Callable[[], int | None]]] = [
            ("direct (one backend)", lambda: backends[0]),
            ("nginx proxy, 1 worker", lambda: start_nginx_proxy(b, backends, 1)),
            ("aiohttp proxy", lambda: start_aiohttp_proxy(b, backends)),
            ("lb, 1 worker", lambda: start_lb(b, backends, 1, lb_env)),
            ("lb, 2 workers", lambda: start_lb(b, backends, 2, lb_env)),
        ]
        # every setup runs (idle ones cost nothing); they are measured one at a time, in
        # rounds, so each sees the machine in similar moods; the best round counts
        ports = {name: start() for name, start in setups}
        for port in ports.values():
            if port is not None:
                # a short warm-up: connection pools filled, caches hot
                run_load(f"http://127.0.0.1:{port}/bench", connections=args.connections, duration=1)
        for round_ in range(args.rounds):
            for name, port in ports.items():
                if port is None:
                    best[name] = None
                    continue
                print(f"round {round_ + 1}: {name} ...", file=sys.stderr, flush=True)
                result = load(b, port)
                if best.get(name) is None or result.rps > best[name].rps:  # type: ignore[union-attr]
                    best[name] = result
    rows = [(name, best.get(name)) for name, _ in setups]
    tool = "wrk" if WRK else "python client (wrk not installed)"
    backend_kind = "nginx" if NGINX else "aiohttp (nginx not installed)"
    print(
        f"\nlb bench: {args.connections} connections, best of {args.rounds} x {args.duration:g} s, "
        f"{tool}, "
        f"backends: 2 x {backend_kind}, 200-byte responses"
    )
    print(table(rows, "nginx proxy, 1 worker" if NGINX else "direct (one backend)"))
    figures = dict(rows)
    print()
    for mine, other, goal in GOALS:
        a, o = figures.get(mine), figures.get(other)
        if a is None or o is None or not o.rps:
            continue
        ratio = a.rps / o.rps
        verdict = "ok" if ratio >= goal else "BELOW GOAL"
        print(f"{mine} / {other}: {ratio:.2f}x (goal >= {goal}x) {verdict}")
    mine_cpu = figures.get("lb, 1 worker")
    print(
        "\nCPU per request is the figure a busy shared machine moves least: req/s depend on "
        "what else runs."
    )
    for other in ("aiohttp proxy", "nginx proxy, 1 worker"):
        o = figures.get(other)
        if mine_cpu and o and mine_cpu.cpu_us and o.cpu_us:
            print(
                f"lb, 1 worker uses {mine_cpu.cpu_us / o.cpu_us:.2f}x the CPU per request of "
                f"{other} ({mine_cpu.cpu_us:.1f} vs {o.cpu_us:.1f} us)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
