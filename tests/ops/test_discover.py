"""The compose lb's backend discovery: a scaled service name becomes LB_BACKENDS."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lb.config import load_settings
from ops.deploy.discover import backends_value, parse_service
from tests.support.net import free_port
from tests.support.processes import Process, python


def test_every_address_of_the_service_becomes_a_backend_once():
    value = backends_value(["172.28.0.7", "172.28.0.5", "172.28.0.7", "fd00::3"], 8000)
    assert value == "http://172.28.0.5:8000,http://172.28.0.7:8000,http://[fd00::3]:8000"
    # and the lb accepts it as LB_BACKENDS
    settings = load_settings({"LB_BACKENDS": value})
    assert [b.port for b in settings.backends] == [8000, 8000, 8000]


def test_bad_service_is_one_clear_line():
    assert parse_service("backend:8000") == ("backend", 8000)
    with pytest.raises(SystemExit, match="LB_BACKEND_SERVICE='backend': expected host:port"):
        parse_service("backend")


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.mark.processes
def test_discover_runs_the_lb_over_the_resolved_service_and_stops_it(tmp_path):
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    proc = Process(
        python("-m", "ops.deploy.discover"),
        log_path=tmp_path / "discover.log",
        env={
            "LB_BACKEND_SERVICE": f"127.0.0.1:{backend.server_port}",
            "LB_LISTEN": f"127.0.0.1:{port}",
            "LB_ADMIN_LISTEN": f"127.0.0.1:{admin}",
            "LB_HEALTH_INTERVAL": "0.5",
            "REDIS_URL": "",
        },
    ).start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/anything", timeout=30)
        assert f"discover: 127.0.0.1 -> http://127.0.0.1:{backend.server_port}" in proc.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status?format=json") as r:
            status = json.loads(r.read())
        assert [b["url"] for b in status["backends"]] == [f"http://127.0.0.1:{backend.server_port}"]
        # SIGTERM to the wrapper stops the lb it started, and the wrapper exits
        assert proc.stop(timeout=40) == 0
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # the lb let go of its port
    finally:
        proc.kill()
        backend.shutdown()


@pytest.mark.processes
@pytest.mark.slow
def test_scaling_out_and_in_updates_the_running_lb_live_under_load(tmp_path):
    """The discovery path: the service gains an address, then loses one, while requests flow.

    Two fake backends on one port at two loopback addresses stand for two replicas of a
    compose service; the resolver is the test's, everything else is real processes.
    """
    import asyncio
    import time

    from ops.deploy.discover import Follower
    from tests.lb.conftest import FakeBackend, start_lb
    from tests.lb.load import admin_call, open_loop

    port = free_port()
    first = FakeBackend("first", port, tmp_path)
    second = FakeBackend("second", port, tmp_path)
    for backend, address in ((first, "127.0.0.2"), (second, "127.0.0.3")):
        backend.url = f"http://{address}:{port}"
        argv = python(
            "-m", "tests.support.fake_backend", "--port", str(port), "--host", address,
            "--name", backend.name, "--record", str(backend.record_path),
        )  # fmt: skip
        backend.process = Process(argv, log_path=backend.log_path).start()
        backend.process.wait_http(f"{backend.url}/healthz")
    token = "discover-test-token-0123456789"
    lb = start_lb(
        {
            "LB_BACKENDS": first.url,
            "LB_WORKERS": "2",
            "LB_ADMIN_TOKEN": token,
            "BUCKET_CAPACITY": "100000",
            "LEAK_RATE": "100000",
            "LB_HEALTH_INTERVAL": "0.5",
        },
        tmp_path / "lb.log",
    )
    found = ["127.0.0.2"]
    follower = Follower("backend", port, lb.admin_url, token, lambda host, p: list(found))
    follower.current = f"http://127.0.0.2:{port}"
    moments: dict[str, float] = {}
    try:

        async def scenario():
            load = asyncio.create_task(open_loop(lambda i: f"{lb.url}/s/{i}", rate=100, seconds=6))
            await asyncio.sleep(1.5)
            found.append("127.0.0.3")  # docker compose up --scale backend=2
            moments["added"] = time.monotonic()
            assert await asyncio.to_thread(follower.tick)
            await asyncio.sleep(2.0)
            found.remove("127.0.0.2")  # --scale backend=1 (this replica goes away)
            moments["removed"] = time.monotonic()
            assert await asyncio.to_thread(follower.tick)
            return await load

        results = asyncio.run(scenario())
        # the replica that went away stops only after the lb stopped using it
        first.stop()
        assert [(r.index, r.error or r.status) for r in results if r.failed] == []
        by_index = {r.index: r for r in results}

        def sent_at(record: str) -> float:
            return by_index[int(record.split()[1].rsplit("/", 1)[1])].sent

        to_second = sorted(sent_at(line) for line in second.records() if "/s/" in line)
        to_first = sorted(sent_at(line) for line in first.records() if "/s/" in line)
        assert to_second and to_second[0] - moments["added"] < 0.5 + 0.5  # one interval + a tick
        assert to_first and to_first[-1] < moments["removed"] + 1.0
        assert [r for r in results if r.sent > moments["removed"] + 1.0]
        _, status = admin_call(f"{lb.admin_url}/status")
        assert [b["url"] for b in status["backends"]] == [second.url]
    finally:
        lb.process.stop(timeout=15)
        first.stop()
        second.stop()
