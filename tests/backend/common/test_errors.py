"""Every error the API gives is JSON {"detail", "code"}: unknown paths, wrong methods, malformed
or oversized bodies, bad hosts, wrong media types, bad ids."""

from __future__ import annotations

import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


@pytest.fixture(scope="module")
def base(module_replicas: Any) -> str:
    return str(module_replicas(1)[0])


def _assert_json_error(resp: requests.Response, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str)
    if code:
        assert body["code"] == code, body


def test_unknown_paths_are_json_404(base: str) -> None:
    for path in (
        "/nope",
        "/api/nope/",
        "/api/tours/not-a-uuid/",
        f"/api/tours/{uuid.uuid4()}/",
        "/api/tours",
    ):
        _assert_json_error(requests.get(f"{base}{path}", timeout=10), 404, "not_found")


def test_wrong_method_is_json_405(base: str, api_client: Any) -> None:
    user = api_client.user(base)
    resp = user.delete("/api/auth/me/")
    _assert_json_error(resp, 405, "method_not_allowed")
    _assert_json_error(requests.put(f"{base}/api/auth/register/", json={}, timeout=10), 405)
    _assert_json_error(requests.post(f"{base}/healthz", timeout=10), 405)


def test_malformed_json_is_400(base: str) -> None:
    resp = requests.post(
        f"{base}/api/auth/register/",
        data=b'{"username": "x", ',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    _assert_json_error(resp, 400, "parse_error")
    resp = requests.post(
        f"{base}/api/auth/token/",
        data=b"\xff\xfe",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    _assert_json_error(resp, 400)
    resp = requests.post(f"{base}/api/auth/register/", json=["a", "list"], timeout=10)
    _assert_json_error(resp, 400, "invalid")


def test_oversized_body_is_413(base: str) -> None:
    big = b'{"username": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    resp = requests.post(
        f"{base}/api/auth/register/",
        data=big,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    _assert_json_error(resp, 413, "body_too_large")


def test_unsupported_media_type_is_415(base: str) -> None:
    resp = requests.post(
        f"{base}/api/auth/register/",
        data=b"<a/>",
        headers={"Content-Type": "application/xml"},
        timeout=10,
    )
    _assert_json_error(resp, 415, "unsupported_media_type")


def test_disallowed_host_is_json_400(base: str) -> None:
    resp = requests.get(f"{base}/api/tours/", headers={"Host": "evil.example"}, timeout=10)
    _assert_json_error(resp, 400, "bad_request")


def test_bad_query_and_garbage_request_line(base: str) -> None:
    _assert_json_error(requests.get(f"{base}/api/tours/?page=abc", timeout=10), 400, "invalid")
    _assert_json_error(requests.get(f"{base}/api/tours/?page_size=-1", timeout=10), 400, "invalid")
    _assert_json_error(requests.get(f"{base}/api/tours/?search=%00", timeout=10), 400, "invalid")
    # a raw request with a non-UTF-8 path never yields a 500
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"GET /api/tours/\xff\xfe/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    assert head.split()[1] in (b"400", b"404"), head


def test_not_authenticated_and_forbidden_are_json(base: str, api_client: Any) -> None:
    _assert_json_error(requests.get(f"{base}/api/auth/me/", timeout=10), 401, "not_authenticated")
    user = api_client.user(base)
    resp = user.post("/api/tours/", json={})
    _assert_json_error(resp, 403, "permission_denied")
