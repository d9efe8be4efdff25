"""`python -m ops.deploy.discover`: run the lb over every address a service name resolves to.

In docker compose, `--scale backend=N` gives the service name `backend` N addresses. This
wrapper resolves LB_BACKEND_SERVICE (`host:port`) into LB_BACKENDS, runs `python -m lb`, and
every LB_DISCOVERY_INTERVAL seconds resolves again: when the set changed, it hands the new
set to the running lb (`PUT /backends` on its admin listener, with LB_ADMIN_TOKEN), which
adds and removes backends live. No restart, so scaling out or in costs no request. If the lb
cannot be told (its admin listener is not up yet), the next round tries again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


def admin_url(environ: Mapping[str, str]) -> str:
    """Where the lb's admin listener answers from this container (a wildcard means loopback)."""
    host, _, port = environ.get("LB_ADMIN_LISTEN", "127.0.0.1:9100").rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def push_backends(url: str, token: str, backends: str, timeout: float = 10.0) -> str | None:
    """PUT the backend set to the lb's admin listener; None when done, else why not."""
    body = json.dumps({"backends": backends.split(",")}).encode()
    headers = {"Content-Type": "application/json", "X-Admin-User": "discover"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/backends", data=body, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read()[:200].decode(errors='replace')}"
    except OSError as exc:
        return str(exc)
    return None


class Follower:
    """Resolves the service and keeps the running lb's backend set equal to what it finds."""

    def __init__(
        self, host: str, port: int, admin: str, token: str, resolver: Resolver = resolve
    ) -> None:
        self.host, self.port = host, port
        self.admin, self.token = admin, token
        self.resolver = resolver
        self.current = ""  # the set the lb has

    def tick(self) -> bool:
        """One round; True when the lb took a new set."""
        found = backends_value(self.resolver(self.host, self.port), self.port)
        if not found or found == self.current:
            return False
        error = push_backends(self.admin, self.token, found)
        if error is not None:
            print(f"discover: could not update the lb ({error}); retrying", flush=True)
            return False
        print(f"discover: {self.host} -> {found} (live)", flush=True)
        self.current = found
        return True


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

    follower = Follower(host, port, admin_url(environ), environ.get("LB_ADMIN_TOKEN", ""), resolver)
    child: subprocess.Popen[bytes] | None = None
    next_check = 0.0
    while not stopping:
        now = time.monotonic()
        if now >= next_check:
            next_check = now + interval
            if child is not None:
                follower.tick()
            else:
                found = backends_value(resolver(host, port), port)
                if found:
                    print(f"discover: {host} -> {found}", flush=True)
                    follower.current = found
                    child = subprocess.Popen(
                        [sys.executable, "-m", "lb"], env={**environ, "LB_BACKENDS": found}
                    )
                else:
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
