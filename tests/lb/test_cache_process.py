"""The micro-cache through a real lb process in front of a scriptable origin (real sockets)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.lb.conftest import LbProcess
from tests.support.net import free_port
from tests.support.processes import Process, python

pytestmark = pytest.mark.processes

PUBLIC = {"Cache-Control": "public, max-age=30"}


class Origin:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            python("-m", "tests.lb.cache.origin", "--port", str(self.port)),
            log_path=tmp / f"origin-{self.port}.log",
        ).start()
        self.process.wait_http(f"{self.url}/healthz")

    def rule(self, path: str, **rule: Any) -> None:
        req = urllib.request.Request(
            f"{self.url}/_control/rule",
            data=json.dumps({"path": path, **rule}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5):
            pass

    def hits(self, path: str) -> int:
        with urllib.request.urlopen(f"{self.url}/_control/hits?path={path}", timeout=5) as r:
            return int(json.loads(r.read())["hits"])

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    o = Origin(tmp_path)
    yield o
    o.stop()


def cached_lb(lb_process: Callable[..., LbProcess], origin: Origin, **env: str) -> LbProcess:
    return lb_process(
        {
            "LB_BACKENDS": origin.url,
            "LB_CACHE_BYTES": "4000000",
            "BUCKET_CAPACITY": "100000",
            "LEAK_RATE": "100000",
            "LB_RATE_RULES": "",
            **env,
        }
    )


def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_500_concurrent_gets_of_a_cold_key_reach_the_backend_once(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    origin.rule("/hot", headers=PUBLIC, sleep=0.5)
    lb = cached_lb(lb_process, origin)

    async def crowd() -> list[tuple[int, str, bytes]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> tuple[int, str, bytes]:
                async with session.get(f"{lb.url}/hot") as resp:
                    return resp.status, resp.headers.get("X-Cache", ""), await resp.read()

            return await asyncio.gather(*(one() for _ in range(500)))

    answers = asyncio.run(crowd())
    assert origin.hits("/hot") == 1
    assert {status for status, _, _ in answers} == {200}
    assert len({body for _, _, body in answers}) == 1
    labels = [label for _, label, _ in answers]
    assert labels.count("MISS") == 1
    assert set(labels) <= {"MISS", "COALESCED", "HIT"}


def test_private_no_store_authorization_and_cookies_are_never_answered_from_the_cache(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    origin.rule("/private", headers={"Cache-Control": "private, max-age=30"})
    origin.rule("/nostore", headers={"Cache-Control": "no-store, max-age=30"})
    origin.rule("/public", headers=PUBLIC)
    origin.rule("/plain", headers={"Cache-Control": "max-age=30"})
    lb = cached_lb(lb_process, origin)
    for path in ("/private", "/nostore"):
        for _ in range(3):
            status, headers, _ = get(f"{lb.url}{path}")
            assert status == 200 and headers["X-Cache"] == "MISS"
        assert origin.hits(path) == 3
    # a public entry exists, yet requests with credentials still go to the backend
    assert get(f"{lb.url}/public")[1]["X-Cache"] == "MISS"
    assert get(f"{lb.url}/public")[1]["X-Cache"] == "HIT"
    for personal in ({"Authorization": "Bearer t"}, {"Cookie": "sessionid=abc"}):
        status, headers, body = get(f"{lb.url}/public", personal)
        assert headers["X-Cache"] == "MISS"
        assert json.loads(body)["seen"]  # the backend saw the credentials: it answered
    assert origin.hits("/public") == 3
    # a cookie request's answer without `public` is not stored for anyone
    get(f"{lb.url}/plain", {"Cookie": "sessionid=abc"})
    assert get(f"{lb.url}/plain")[1]["X-Cache"] == "MISS"
    assert origin.hits("/plain") == 2


def test_vary_is_honoured(lb_process: Callable[..., LbProcess], origin: Origin) -> None:
    origin.rule("/vary", headers={**PUBLIC, "Vary": "Accept-Language"})
    lb = cached_lb(lb_process, origin)
    en = {"Accept-Language": "en"}
    fr = {"Accept-Language": "fr"}
    assert get(f"{lb.url}/vary", en)[1]["X-Cache"] == "MISS"
    _, headers, body = get(f"{lb.url}/vary", fr)
    assert headers["X-Cache"] == "MISS" and json.loads(body)["seen"]["accept-language"] == "fr"
    _, headers, body = get(f"{lb.url}/vary", en)
    assert headers["X-Cache"] == "HIT" and json.loads(body)["seen"]["accept-language"] == "en"
    _, headers, body = get(f"{lb.url}/vary", fr)
    assert headers["X-Cache"] == "HIT" and json.loads(body)["seen"]["accept-language"] == "fr"
    assert origin.hits("/vary") == 2
    origin.rule("/star", headers={**PUBLIC, "Vary": "*"})
    get(f"{lb.url}/star")
    assert get(f"{lb.url}/star")[1]["X-Cache"] == "MISS"


def test_a_head_is_answered_from_a_gets_entry_without_a_body(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    origin.rule("/h", headers=PUBLIC)
    lb = cached_lb(lb_process, origin)
    _, _, body = get(f"{lb.url}/h")
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
        sock.sendall(
            b"HEAD /h HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % lb.port
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nX-Cache: HIT" in head
    assert re.search(rb"\r\nContent-Length: %d\r\n" % len(body), head + b"\r\n")
    assert rest == b""  # no body
    assert origin.hits("/h") == 1


def test_stale_if_error_serves_a_stale_entry_with_age_then_lets_the_error_through(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    policy = {"Cache-Control": "public, max-age=1, stale-if-error=3"}
    origin.rule("/sie", headers=policy)
    lb = cached_lb(lb_process, origin)
    _, _, fresh = get(f"{lb.url}/sie")
    stored = time.monotonic()
    origin.rule("/sie", headers=policy, status=500)
    time.sleep(1.3)
    status, headers, body = get(f"{lb.url}/sie")
    assert (status, headers["X-Cache"], body) == (200, "STALE", fresh)
    assert int(headers["Age"]) >= 1
    time.sleep(max(0.0, stored + 4.5 - time.monotonic()))  # past max-age + stale-if-error
    status, headers, _ = get(f"{lb.url}/sie")
    assert status == 500 and headers["X-Cache"] == "MISS"


def test_stale_if_error_covers_an_unreachable_backend(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    origin.rule("/down", headers={"Cache-Control": "public, max-age=1, stale-if-error=30"})
    lb = cached_lb(lb_process, origin)
    _, _, fresh = get(f"{lb.url}/down")
    origin.stop()
    time.sleep(1.3)
    status, headers, body = get(f"{lb.url}/down")
    assert (status, headers["X-Cache"], body) == (200, "STALE", fresh)
    assert int(headers["Age"]) >= 1
    status, headers, _ = get(f"{lb.url}/never-cached")
    assert status in (502, 503) and headers["X-Cache"] == "MISS"


def test_stale_while_revalidate_answers_at_once_and_refreshes_once(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    origin.rule("/swr", headers={"Cache-Control": "public, max-age=1, stale-while-revalidate=30"})
    lb = cached_lb(lb_process, origin)
    get(f"{lb.url}/swr")
    time.sleep(1.2)
    labels = [get(f"{lb.url}/swr")[1]["X-Cache"] for _ in range(5)]
    assert labels[0] == "STALE"
    deadline = time.monotonic() + 5
    while origin.hits("/swr") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert origin.hits("/swr") == 2  # one background refresh, not one per stale answer
    _, headers, body = get(f"{lb.url}/swr")
    assert headers["X-Cache"] == "HIT" and json.loads(body)["n"] == 2


def test_a_purge_header_drops_the_tagged_entries(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    origin.rule("/tours/a", headers={**PUBLIC, "Surrogate-Key": "tours tour:a"})
    origin.rule("/tours/b", headers={**PUBLIC, "Surrogate-Key": "tours tour:b"})
    origin.rule("/book", headers={"X-Cache-Purge": "tour:a"})
    lb = cached_lb(lb_process, origin)
    for path in ("/tours/a", "/tours/b"):
        get(f"{lb.url}{path}")
        _, headers, _ = get(f"{lb.url}{path}")
        assert headers["X-Cache"] == "HIT" and "Surrogate-Key" not in headers
    req = urllib.request.Request(f"{lb.url}/book", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert "X-Cache-Purge" not in resp.headers
    assert get(f"{lb.url}/tours/a")[1]["X-Cache"] == "MISS"
    assert get(f"{lb.url}/tours/b")[1]["X-Cache"] == "HIT"


def test_the_cache_never_grows_past_lb_cache_bytes(
    lb_process: Callable[..., LbProcess], origin: Origin
) -> None:
    limit = 200_000
    origin.rule("/many/*", headers=PUBLIC, size=2000)
    lb = cached_lb(lb_process, origin, LB_CACHE_BYTES=str(limit))

    async def stream() -> None:
        async with aiohttp.ClientSession() as session:
            for start in range(0, 1500, 50):

                async def one(i: int) -> None:
                    async with session.get(f"{lb.url}/many/{i}?q={i}") as resp:
                        await resp.read()
                        assert resp.status == 200

                await asyncio.gather(*(one(i) for i in range(start, start + 50)))

    asyncio.run(stream())
    time.sleep(0.8)  # one tick: the gauges follow
    cache = lb.status()["cache"]
    assert 0 < cache["bytes"] <= limit
    assert cache["evicted"] > 0
    assert cache["entries"] < 1500
    metrics = lb.metrics_text()
    held = float(re.search(r"^lb_cache_bytes (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert 0 < held <= limit
