"""The compose TLS front for real: make-cert.sh makes a certificate, nginx loads our config,
terminates TLS, appends the client to X-Forwarded-For, and refuses foreign host names."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(
        not (Path(NGINX).exists() and shutil.which("openssl")), reason="nginx/openssl missing"
    ),
]


class Echo(BaseHTTPRequestHandler):
    """Stands in for the lb: answers with the headers it was given."""

    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def nginx_version() -> tuple[int, ...]:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr
    return tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())


@pytest.fixture
def front(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    made = subprocess.run(
        ["sh", str(ROOT / "ops/deploy/nginx/make-cert.sh")],
        env={"CERT_DIR": str(certs), "CERT_HOSTNAME": "localhost", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert (certs / "tls.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    http_port, https_port = free_port(), free_port()
    conf = (ROOT / "ops/deploy/nginx/nginx.conf").read_text()
    conf = conf.replace("/certs/", f"{certs}/")
    conf = conf.replace("server lb:8080;", f"server 127.0.0.1:{upstream.server_port};")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    conf = conf.replace("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl")
    conf = conf.replace("access_log /dev/stdout;", "access_log off;")
    if nginx_version() < (1, 25, 1):
        conf = conf.replace("http2 on;", "")  # the image's nginx 1.27 knows it; older hosts don't
    (tmp_path / "nginx.conf").write_text(conf)
    argv = [NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    log = open(tmp_path / "nginx.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*argv, "-g", f"daemon off; pid {tmp_path}/nginx.pid;"], stdout=log, stderr=log
    )
    try:
        wait_for_port(https_port, timeout=10)
        yield http_port, https_port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        upstream.shutdown()


def https_get(port: int, host: str) -> tuple[int, dict]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a self-signed development certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.request("GET", "/api/tours/", headers={"Host": host, "X-Forwarded-For": "6.6.6.6"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, (json.loads(body) if response.status == 200 else {})


def test_tls_front_forwards_to_the_lb_with_the_client_address(front):
    _, https_port = front
    status, seen = https_get(https_port, "localhost")
    assert status == 200
    # nginx appends the peer it saw: the lb walks from the right and finds 127.0.0.1
    assert seen["x-forwarded-for"].split(",")[-1].strip() == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["host"] == "localhost"


def test_hsts_asks_browsers_for_https_for_a_year(front):
    _, https_port = front
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", https_port, context=context, timeout=10)
    conn.request("GET", "/api/tours/", headers={"Host": "localhost"})
    response = conn.getresponse()
    response.read()
    conn.close()
    hsts = response.getheader("Strict-Transport-Security", "")
    max_age = int(re.search(r"max-age=(\d+)", hsts).group(1))
    assert max_age >= 365 * 24 * 3600, hsts


def test_the_development_key_is_readable_by_its_owner_only(tmp_path):
    made = subprocess.run(
        ["sh", str(ROOT / "ops/deploy/nginx/make-cert.sh")],
        env={"CERT_DIR": str(tmp_path), "CERT_HOSTNAME": "localhost", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls.crt").stat().st_mode & 0o777 == 0o644


def test_foreign_host_names_and_plain_http_do_not_reach_the_lb(front):
    http_port, https_port = front
    status, _ = https_get(https_port, "evil.example")
    assert status == 421
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    conn.request("GET", "/api/tours/", headers={"Host": "localhost"})
    response = conn.getresponse()
    assert response.status == 308
    assert response.getheader("Location") == "https://localhost/api/tours/"
