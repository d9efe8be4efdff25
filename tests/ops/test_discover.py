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
