"""A headless Locust run exits non-zero when a threshold is missed (slow browsing, failing
bookings), and says which; reports land where asked."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.locust import run_locust
from tests.support.processes import ROOT

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TOUR = {"id": "5b0c8f6e-1d7a-4c55-9d3e-1b1f3c4b8a01", "name": "Black Friday city walk"}


class SlowAndBroken(BaseHTTPRequestHandler):
    """Browsing answers in 300 ms (> the 200 ms p95 limit); every booking fails with a 500."""

    protocol_version = "HTTP/1.1"

    def reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the run ended while this was on its way
            self.wfile.write(data)

    def do_GET(self) -> None:
        time.sleep(0.3)
        if self.path.startswith("/api/tours/?") or self.path == "/api/tours/":
            self.reply(200, {"count": 1, "next": None, "previous": None, "results": [TOUR]})
        else:
            self.reply(200, TOUR)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/api/auth/register/":
            self.reply(201, {"id": 1, "username": "u", "email": "u@example.com"})
        elif self.path == "/api/auth/token/":
            self.reply(200, {"access": "a", "refresh": "r"})
        else:
            self.reply(500, {"detail": "boom", "code": "server_error"})

    def log_message(self, *_args: object) -> None:
        pass


def test_missed_thresholds_fail_the_run(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowAndBroken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = run_locust(
            f"http://127.0.0.1:{server.server_port}", "smoke", tmp_path, "--run-time", "8s",
            timeout=90,
        )  # fmt: skip
    finally:
        server.shutdown()
    output = run.output
    assert run.returncode == 1, output[-4000:]
    assert "FAIL browse p95 ms" in output
    assert "FAIL failure ratio" in output
    assert "FAILED: a threshold was missed" in output
    assert (tmp_path / "smoke_stats.csv").exists() and run.html.exists()


def test_unknown_profile_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "-t", "1s"],
        cwd=ROOT,
        env={**os.environ, "LOADTEST_PROFILE": "black-monday"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LOADTEST_PROFILE='black-monday': expected one of smoke, peak, peak150" in (
        result.stdout + result.stderr
    )
