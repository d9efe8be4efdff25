"""`python -m ops.deploy.discover`: run the lb over every address a service name resolves to.

In docker compose, `--scale backend=N` gives the service name `backend` N addresses. This
wrapper resolves LB_BACKEND_SERVICE (`host:port`) into LB_BACKENDS, runs `python -m lb`, and
every LB_DISCOVERY_INTERVAL seconds resolves again: when the set changed, it stops the lb
gracefully (SIGTERM: it drains) and starts it over the new set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from types import FrameType

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every IPv4/IPv6 address of `host` (what Docker's DNS returns for a scaled service)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in infos})


def backends_value(addresses: list[str], port: int) -> str:
    """LB_BACKENDS for these addresses: distinct, sorted, IPv6 in brackets."""
    urls = []
    for address in sorted(set(addresses)):
        host = f"[{address}]" if ":" in address else address
        urls.append(f"http://{host}:{port}")
    return ",".join(urls)


def parse_service(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SystemExit(f"LB_BACKEND_SERVICE={text!r}: expected host:port, e.g. backend:8000")
    return host, int(port)


def main(environ: Mapping[str, str] = os.environ, resolver: Resolver = resolve) -> int:
    host, port = parse_service(environ.get("LB_BACKEND_SERVICE", "backend:8000"))
    raw_interval = environ.get("LB_DISCOVERY_INTERVAL", "10")
    try:
        interval = float(raw_interval)
    except ValueError:
        raise SystemExit(
            f"LB_DISCOVERY_INTERVAL={raw_interval!r}: expected seconds, e.g. 10"
        ) from None
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    current = ""
    child: subprocess.Popen[bytes] | None = None
    next_check = 0.0
    while not stopping:
        now = time.monotonic()
        if now >= next_check:
            next_check = now + interval
            found = backends_value(resolver(host, port), port)
            if found and found != current:
                print(f"discover: {host} -> {found}", flush=True)
                if child is not None:
                    child.send_signal(signal.SIGTERM)
                    child.wait()
                current = found
                child = subprocess.Popen(
                    [sys.executable, "-m", "lb"], env={**environ, "LB_BACKENDS": current}
                )
            elif not found and child is None:
                print(f"discover: {host} resolves to nothing yet; retrying", flush=True)
                next_check = now + 1
        if child is not None and child.poll() is not None:
            print(f"discover: the lb exited with code {child.returncode}", flush=True)
            return int(child.returncode or 1)
        time.sleep(0.2)
    if child is not None and child.poll() is None:
        child.send_signal(signal.SIGTERM)
        return int(child.wait())
    return 0


if __name__ == "__main__":
    sys.exit(main())
