"""Shared bench helpers: fast backends (nginx or a minimal server), nginx as a proxy, the lb,
wrk runs (with a Python fallback) and their parsed figures. Everything on 127.0.0.1, every
process started here is stopped here, by its own PID."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
WRK = shutil.which("wrk")
BODY = "x" * 199 + "\n"  # the 200-byte response every backend answers
OPEN_ADMISSION = {"BUCKET_CAPACITY": "100000000", "LEAK_RATE": "100000000", "LB_RATE_RULES": ""}


# -- processes ------------------------------------------------------------------------------


class Proc:
    """A child process with its output in a log file; `stop()` signals only its PID."""

    def __init__(
        self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = list(argv)
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=ROOT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def wait_port(port: int, proc: Proc | None = None, timeout: float = 20.0) -> None:
    def died() -> str | None:
        if proc is None or proc.popen.poll() is None:
            return None
        return f"{proc.argv[:3]} exited: {proc.log.read_text()[-2000:]}"

    wait_for_port(port, timeout=timeout, died=died)


class Bench:
    """Owns a scratch directory and every process started through it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))
        os.chmod(self.dir, 0o755)
        self.procs: list[Proc] = []
        self.by_port: dict[int, Proc] = {}  # which process serves a port

    def pid(self, port: int) -> int | None:
        proc = self.by_port.get(port)
        return proc.pid if proc is not None else None

    def start(
        self, name: str, argv: Sequence[str], port: int, env: Mapping[str, str] | None = None
    ) -> Proc:
        proc = Proc(argv, self.dir / f"{name}.log", env)
        self.procs.append(proc)
        self.by_port[port] = proc
        wait_port(port, proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def bench() -> Iterator[Bench]:
    b = Bench()
    try:
        yield b
    finally:
        b.close()


# -- servers ----------------------------------------------------------------------------------


def _nginx_conf(directory: Path, workers: int, body: str) -> str:
    return f"""
worker_processes {workers};
daemon off;
master_process on;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;
    {body}
}}
"""


def start_nginx_backends(b: Bench, count: int = 2, workers: int = 1) -> list[int]:
    """`count` fast backends answering 200 bytes: one nginx listening on `count` ports, or,
    without nginx, minimal aiohttp servers."""
    ports = [free_port() for _ in range(count)]
    if NGINX is None:
        for port in ports:
            b.start(
                f"backend-{port}",
                [sys.executable, "-m", "ops.bench.common", "backend", str(port)],
                port,
            )
        return ports
    directory = b.dir / "nginx-backends"
    directory.mkdir()
    listens = "\n".join(f"listen 127.0.0.1:{p} reuseport;" for p in ports)
    server = f"""server {{
        {listens}
        location / {{ default_type text/plain; return 200 "{BODY[:-1]}\\n"; }}
    }}"""
    conf = directory / "nginx.conf"
    conf.write_text(_nginx_conf(directory, workers, server))
    proc = b.start("nginx-backends", [NGINX, "-p", str(directory), "-c", str(conf)], ports[-1])
    for port in ports:
        wait_port(port)
        b.by_port[port] = proc
    return ports


def start_nginx_proxy(b: Bench, backends: Sequence[int], workers: int = 1) -> int | None:
    """nginx as the reference reverse proxy (keep-alive upstreams); None without nginx."""
    if NGINX is None:
        return None
    port = free_port()
    directory = b.dir / f"nginx-proxy-{port}"
    directory.mkdir()
    upstream = "\n".join(f"server 127.0.0.1:{p};" for p in backends)
    body = f"""upstream backends {{ {upstream} keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
        }}
    }}"""
    conf = directory / "nginx.conf"
    conf.write_text(_nginx_conf(directory, workers, body))
    b.start(f"nginx-proxy-{port}", [NGINX, "-p", str(directory), "-c", str(conf)], port)
    return port


def start_lb(
    b: Bench, backends: Sequence[int], workers: int = 1, env: Mapping[str, str] | None = None
) -> int:
    """`python -m lb` in front of `backends`; returns its public port."""
    return launch_lb(b, backends, workers, env)[0]


def launch_lb(
    b: Bench, backends: Sequence[int], workers: int = 1, env: Mapping[str, str] | None = None
) -> tuple[int, int, int]:
    """`python -m lb` in front of `backends`, admission in-process and wide open unless `env`
    says otherwise; returns (public port, admin port, master pid)."""
    port, admin = free_port(), free_port()
    full = {
        **OPEN_ADMISSION,
        "LB_LISTEN": f"127.0.0.1:{port}",
        "LB_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "LB_BACKENDS": ",".join(f"http://127.0.0.1:{p}" for p in backends),
        "LB_WORKERS": str(workers),
        "LB_ACCESS_LOG": "0",
        "LB_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    proc = b.start(f"lb-{port}", [sys.executable, "-m", "lb"], port, full)
    wait_port(admin, proc)
    time.sleep(0.5 if workers == 1 else 1.0)  # let every worker bind
    return port, admin, proc.pid


# -- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    cpu_us: float | None = None  # CPU time the server processes spent per request


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        todo += _children(current)
    return total


def measure(url: str, pid: int | None, **load: Any) -> Result:
    """`run_load(url)`, plus the CPU the server process tree `pid` spent per request."""
    before = cpu_seconds(pid) if pid else None
    started = time.monotonic()
    result = run_load(url, **load)
    elapsed = time.monotonic() - started
    if before is None or pid is None or not result.rps:
        return result
    spent = cpu_seconds(pid) - before
    requests = result.rps * min(elapsed, float(load.get("duration", 5.0)))
    return Result(result.rps, result.p50_ms, result.p99_ms, result.errors, spent / requests * 1e6)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Result:
    """req/s, p50, p99 and error count from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in match.groups())
    return Result(rps, p50, p99, errors)


def run_load(url: str, *, connections: int = 64, duration: float = 5.0, threads: int = 2) -> Result:
    """Closed-loop load on `url`: wrk when installed, else a Python client."""
    if WRK is not None:
        done = subprocess.run(
            [
                WRK,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
        )
        return parse_wrk(done.stdout)
    return asyncio.run(_python_load(url, connections, duration))


async def _python_load(url: str, connections: int, duration: float) -> Result:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status >= 400:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.monotonic() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.monotonic() - started
    latencies.sort()
    if not latencies:
        return Result(0.0, 0.0, 0.0, errors)
    return Result(
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors,
    )


def table(rows: Sequence[tuple[str, Result | None]], reference: str) -> str:
    """The printed figures: req/s, p50, p99, errors, CPU per request, ratio to `reference`."""
    ref = dict(rows).get(reference)
    lines = [
        f"{'setup':<28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'cpu us/req':>10}  x {reference}"
    ]
    for name, res in rows:
        if res is None:
            lines.append(f"{name:<28} {'n/a':>9}")
            continue
        ratio = f"{res.rps / ref.rps:.2f}" if ref and ref.rps else "-"
        cpu = f"{res.cpu_us:.1f}" if res.cpu_us is not None else "-"
        lines.append(
            f"{name:<28} {res.rps:>9.0f} {res.p50_ms:>8.2f} {res.p99_ms:>8.2f} "
            f"{res.errors:>7} {cpu:>10}  {ratio:>5}"
        )
    return "\n".join(lines)


# -- a minimal fallback backend ---------------------------------------------------------------


def _serve_backend(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=BODY)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    if sys.argv[1:2] == ["backend"]:
        _serve_backend(int(sys.argv[2]))
