"""The lb's own answers for browsers: the HTML waiting page on 429/502/503/504, JSON for the rest.

Pure tests of the one builder (lb/errors.py), then through a real `python -m lb` process: a
browser's Accept gets the page, an API client's keeps the JSON, with the same status and
headers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from lb.errors import (
    BadGateway,
    BadRequest,
    GatewayTimeout,
    LbError,
    NoBackend,
    prefers_html,
    render_error,
)
from tests.lb.conftest import LbProcess
from tests.support.net import free_port

CHROME = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (CHROME, True),
        (FIREFOX, True),
        ("text/html", True),
        ("text/*", False),  # html not named: a tool, not a browser
        ("*/*", False),
        (None, False),
        ("", False),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.9, text/html", True),
        ("text/html;q=0", False),
        ("text/html;q=oops", False),
        ("TEXT/HTML", True),
    ],
)
def test_html_only_for_a_browser_that_prefers_it(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


def test_rate_limited_page_keeps_status_and_headers_and_counts_down() -> None:
    error = LbError("Too many requests; retry in 3 seconds.", status=429, code="rate_limited")
    extra = (("X-Request-ID", "rid-1"), ("Retry-After", "3"), ("RateLimit", '"default";r=0;t=3'))
    status, headers, body = parse(render_error(error, extra, accept=CHROME))
    assert status == 429
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    assert headers["retry-after"] == "3" and headers["x-request-id"] == "rid-1"
    assert headers["ratelimit"] == '"default";r=0;t=3'
    page = body.decode()
    assert '<meta http-equiv="refresh" content="5">' in page  # the fallback, after the script
    assert 'id="wait" data-wait="3">3<' in page
    assert "location.replace(location.href)" in page
    assert "Just a moment" in page
    # self-contained: no external stylesheet, script or image
    assert not re.search(r"<(link|script|img)[^>]+(href|src)=\"(https?:)?//", page)
    assert '<link rel="stylesheet"' not in page


def test_json_for_api_clients_with_the_same_head() -> None:
    error = LbError("slow down", status=429, code="rate_limited")
    extra = (("Retry-After", "2"),)
    for accept in (None, "*/*", "application/json"):
        status, headers, body = parse(render_error(error, extra, accept=accept))
        assert status == 429 and headers["retry-after"] == "2"
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"detail": "slow down", "code": "rate_limited"}


@pytest.mark.parametrize(
    ("error", "wait", "words"),
    [
        (NoBackend(), 1, "right back"),  # NoBackend carries its own Retry-After
        (LbError("busy", status=503, code="overloaded", headers=[("Retry-After", "7")]), 7, "busy"),
        (LbError("redis", status=503, code="admission_unavailable"), 5, "right back"),
        (BadGateway(), 5, "went wrong"),
        (GatewayTimeout(), 5, "too long"),
    ],
)
def test_every_waiting_status_renders_a_page(error: LbError, wait: int, words: str) -> None:
    status, headers, body = parse(render_error(error, accept=CHROME))
    assert status == error.status
    assert headers["content-type"].startswith("text/html")
    page = body.decode()
    assert words in page and f'data-wait="{wait}"' in page
    assert ("retry-after" in headers) == any(n == "Retry-After" for n, _ in error.headers)


def test_other_errors_stay_json_for_browsers_too() -> None:
    status, headers, body = parse(render_error(BadRequest(), accept=CHROME))
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == "bad_request"


def test_detail_is_escaped_and_head_only_has_no_body() -> None:
    error = LbError("<script>alert(1)</script>", status=502, code="bad_gateway")
    _, _, body = parse(render_error(error, accept=CHROME))
    assert b"<script>alert(1)</script>" not in body and b"&lt;script&gt;" in body
    raw = render_error(error, accept=CHROME, head_only=True, close=True)
    status, headers, body = parse(raw)
    assert status == 502 and body == b"" and headers["connection"] == "close"
    assert int(headers["content-length"]) > 0  # the length of the page a GET would get


# --- through a real lb process ----------------------------------------------------------------


@pytest.mark.processes
def test_lb_rate_limit_page_for_browsers_json_for_api_clients(
    fake_backends: Callable[[int], list[Any]], lb_process: Callable[..., LbProcess]
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process({"BUCKET_CAPACITY": "1", "LEAK_RATE": "0.5", "LB_BACKENDS": backend.url})
    url = f"{lb.url}/tours/"
    assert requests.get(url, headers={"Accept": CHROME}, timeout=5).status_code == 200
    page = requests.get(url, headers={"Accept": CHROME}, timeout=5)
    api = requests.get(url, headers={"Accept": "application/json"}, timeout=5)
    assert page.status_code == api.status_code == 429
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Retry-After"] == api.headers["Retry-After"] == "2"
    assert "RateLimit" in page.headers and "X-Request-ID" in page.headers
    assert 'data-wait="2"' in page.text
    assert api.json()["code"] == "rate_limited"


@pytest.mark.processes
def test_lb_no_backend_page_for_browsers(lb_process: Callable[..., LbProcess]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    lb = lb_process({"LB_BACKENDS": dead, "LB_HEALTH_INTERVAL": "0.2"})
    deadline = time.monotonic() + 15  # until the health checks take the dead backend out
    while True:
        page = requests.get(f"{lb.url}/", headers={"Accept": CHROME}, timeout=5)
        if page.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert page.status_code == 503, page.text
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Retry-After"] == "1" and 'data-wait="1"' in page.text
    api = requests.get(f"{lb.url}/", timeout=5)
    assert api.status_code in (502, 503) and api.json()["code"] in ("no_backend", "bad_gateway")
