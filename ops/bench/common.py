"""Shared bench helpers: fast backends (nginx or a minimal server), nginx as a proxy, the lb.
The load and its figures are in load.py. Everything on 127.0.0.1, every process started here
is stopped here, by its own PID (ops/processes.py)."""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ops.processes import Process
from ops.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
BODY = "x" * 199 + "\n"  # the 200-byte response every backend answers
OPEN_ADMISSION = {"BUCKET_CAPACITY": "100000000", "LEAK_RATE": "100000000", "LB_RATE_RULES": ""}


# -- processes ------------------------------------------------------------------------------


class Bench:
    """Owns a scratch directory and every process started through it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))
        os.chmod(self.dir, 0o755)
        self.procs: list[Process] = []
        self.by_port: dict[int, Process] = {}  # which process serves a port

    def pid(self, port: int) -> int | None:
        proc = self.by_port.get(port)
        return proc.pid if proc is not None else None

    def start(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        proc = Process(argv, log_path=self.dir / f"{name}.log", env=env, cwd=cwd or ROOT).start()
        self.procs.append(proc)
        self.by_port[port] = proc
        proc.wait_port(port)
        return proc

    def stop(self, proc: Process) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def raise_fd_limit(wanted: int = 65536) -> int:
    """Lift this process's open-file limit towards `wanted` (children inherit it): 1024
    connections cost the lb 2048 descriptors and wrk 1024. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@contextmanager
def bench() -> Iterator[Bench]:
    raise_fd_limit()
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
        proc.wait_port(port)
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
    b: Bench,
    backends: Sequence[int],
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    tree: Path | None = None,
) -> int:
    """`python -m lb` in front of `backends`; returns its public port."""
    return launch_lb(b, backends, workers, env, tree)[0]


def launch_lb(
    b: Bench,
    backends: Sequence[int],
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    tree: Path | None = None,
) -> tuple[int, int, int]:
    """`python -m lb` in front of `backends`, admission in-process and wide open unless `env`
    says otherwise; returns (public port, admin port, master pid). `tree`: another checkout
    of the project (a `git worktree` of an older commit, say) whose lb runs instead of this
    one's, with the same interpreter and packages: a before/after in one run."""
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
    if tree is not None:
        tree = tree.resolve()
        full["PYTHONPATH"] = str(tree)  # `python -m lb` imports the lb of `tree`
        if not (tree / "lb" / "__main__.py").is_file():
            raise FileNotFoundError(f"{tree} holds no lb/__main__.py")
    proc = b.start(f"lb-{port}", [sys.executable, "-m", "lb"], port, full, cwd=tree)
    proc.wait_port(admin)
    time.sleep(0.5 if workers == 1 else 1.0)  # let every worker bind
    return port, admin, proc.pid


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
