"""The lb as a proxy, over real sockets: forwarding headers, limits, timeouts, streaming, WebSocket."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.lb.conftest import FakeBackend, LbProcess, start_lb
from tests.support.net import free_port

pytestmark = [pytest.mark.processes]

OPEN_ADMISSION = {"BUCKET_CAPACITY": "1000000", "LEAK_RATE": "1000000", "LB_RATE_RULES": ""}
MB = 1024 * 1024


@dataclass
class Stack:
    backends: list[FakeBackend]
    lb: LbProcess  # untrusted clients, big body limit
    strict: LbProcess  # trusts 127.0.0.0/8 as a proxy, 1 MB body limit


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work: Path = tmp_path_factory.mktemp("proxy")
    backends = [FakeBackend(f"p{i}", free_port(), work) for i in range(2)]
    lbs: list[LbProcess] = []
    try:
        for b in backends:
            b.start()
        common = {
            **OPEN_ADMISSION,
            "LB_BACKENDS": ",".join(b.url for b in backends),
            "LB_FIRST_BYTE_TIMEOUT": "1",
            "LB_HEADER_TIMEOUT": "1.5",
            "LB_MAX_HEADER_BYTES": "8192",
            "LB_OUTLIER_FAILURES": "1000",
        }
        # /up and /upload stream (the tests of streaming); every other body is buffered
        streaming = {"LB_MAX_BODY_BYTES": str(200 * MB), "LB_STREAM_PATHS": "/up"}
        lbs.append(start_lb({**common, **streaming}, work / "lb.log"))
        lbs.append(
            start_lb(
                {
                    **common,
                    "LB_MAX_BODY_BYTES": str(MB),
                    "LB_TRUSTED_PROXIES": "127.0.0.0/8",
                },
                work / "strict.log",
            )
        )
        yield Stack(backends, lbs[0], lbs[1])
    finally:
        for lb in lbs:
            lb.process.stop()
        for b in backends:
            b.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the lb closes the connection or `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def json_body(raw: bytes) -> dict[str, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/json" in head, head
    return json.loads(body)  # type: ignore[no-any-return]


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# -- forwarding headers and request ids --------------------------------------------------


async def test_untrusted_client_cannot_forge_forwarding_headers(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    spoof = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Real-IP": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "secret",
        "Keep-Alive": "timeout=100",
    }
    async with session.get(f"{stack.lb.url}/api/tours/?q=1", headers=spoof) as resp:
        assert resp.status == 200
        echo = await resp.json()
    seen = echo["headers"]
    assert echo["path"] == "/api/tours/" and echo["query"] == "q=1"
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Real-IP"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert "X-Hop" not in seen and "Keep-Alive" not in seen
    assert "6.6.6.6" not in json.dumps(seen)


async def test_trusted_proxy_chain_is_extended_and_believed(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    sent = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    async with session.get(f"{stack.strict.url}/x", headers=sent) as resp:
        seen = (await resp.json())["headers"]
    assert seen["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert seen["X-Real-IP"] == "203.0.113.9"
    assert seen["X-Forwarded-Proto"] == "https"


def test_repeated_forwarded_for_lines_are_one_chain(stack: Stack) -> None:
    # RFC 9110: repeated list-valued header lines are one list, in order. Keeping only one
    # line would drop hops, and with them the address a trusted proxy vouched for.
    raw = raw_request(
        stack.strict.port,
        b"GET /chain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n",
    )
    seen = json_body(raw)["headers"]
    assert isinstance(seen, dict)
    assert seen["X-Forwarded-For"] == "198.51.100.1, 203.0.113.5, 127.0.0.1"
    assert seen["X-Real-IP"] == "203.0.113.5"


async def test_request_id_is_kept_if_well_formed_else_generated_and_echoed(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{stack.lb.url}/id", headers={"X-Request-ID": "abc-123"}) as resp:
        assert resp.headers["X-Request-ID"] == "abc-123"
        assert (await resp.json())["headers"]["X-Request-ID"] == "abc-123"
    for bad in ("not ok!", "x" * 300):
        async with session.get(f"{stack.lb.url}/id", headers={"X-Request-ID": bad}) as resp:
            rid = resp.headers["X-Request-ID"]
            assert re.fullmatch(r"[0-9a-f]{32}", rid)
            assert (await resp.json())["headers"]["X-Request-ID"] == rid


# -- limits and malformed requests --------------------------------------------------------


def test_oversized_headers_get_431_json(stack: Stack) -> None:
    one_huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    raw = raw_request(stack.lb.port, one_huge)
    assert raw.startswith(b"HTTP/1.") and b" 431 " in raw.split(b"\r\n")[0]
    assert json_body(raw)["code"] == "headers_too_large"
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 400) for i in range(30))
    raw = raw_request(
        stack.lb.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + many + b"\r\n"
    )
    assert b" 431 " in raw.split(b"\r\n")[0]
    assert json_body(raw)["code"] == "headers_too_large"


def test_malformed_http_gets_400_json(stack: Stack) -> None:
    for garbage in (
        b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,  # a TLS hello
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        # broken chunk framing while the request is already on its way to a backend
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"10000\r\n"
        + b"a" * 70000
        + b"\r\nnot-hex\r\n",
        # garbage after a complete request on a keep-alive connection
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02 nonsense\r\n\r\n",
    ):
        raw = raw_request(stack.lb.port, garbage)
        last = raw[raw.rindex(b"HTTP/1.1 ") :]
        assert b" 400 " in last.split(b"\r\n")[0], raw[:300]
        assert json_body(last)["code"] == "bad_request"
    # and the lb still serves
    raw = raw_request(stack.lb.port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b" 200 " in raw.split(b"\r\n")[0]


def test_declared_body_over_the_limit_gets_413_before_upload(stack: Stack) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (300 * MB)
    started = time.monotonic()
    raw = raw_request(stack.lb.port, head)
    assert b" 413 " in raw.split(b"\r\n")[0]
    assert json_body(raw)["code"] == "body_too_large"
    assert time.monotonic() - started < 3


async def test_chunked_body_over_the_limit_gets_413(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    async def two_megabytes() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield b"z" * 65536

    async with session.post(f"{stack.strict.url}/upload", data=two_megabytes()) as resp:
        assert resp.status == 413
        assert (await resp.json())["code"] == "body_too_large"


# -- streaming ------------------------------------------------------------------------------


async def test_chunked_both_ways(stack: Stack, session: aiohttp.ClientSession) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(50):
            yield b"%04d" % i * 1000

    async with session.post(f"{stack.lb.url}/up", data=pieces()) as resp:
        echo = await resp.json()
    assert echo["body_bytes"] == 50 * 4000
    assert echo["headers"].get("Transfer-Encoding") == "chunked"
    async with session.get(f"{stack.lb.url}/down?size=300000") as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in resp.headers
        assert len(await resp.read()) == 300000


@pytest.mark.slow
async def test_100mb_up_and_down_stream_without_growing_lb_memory(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    pid = stack.lb.pid
    before = rss_kb(pid, "VmRSS")
    block = b"u" * MB

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield block

    async with session.post(f"{stack.lb.url}/upload", data=upload()) as resp:
        assert resp.status == 200
        assert (await resp.json())["body_bytes"] == 100 * MB
    received = 0
    async with session.get(f"{stack.lb.url}/download?size={100 * MB}") as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(MB):
            received += len(chunk)
    assert received == 100 * MB
    peak = rss_kb(pid, "VmHWM")
    after = rss_kb(pid, "VmRSS")
    assert peak - before < 50 * 1024, f"lb peak RSS grew {(peak - before) // 1024} MB"
    assert after - before < 50 * 1024


async def test_websocket_echo_through_the_lb(stack: Stack, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(f"{stack.lb.url}/ws") as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await ws.receive(timeout=5)).data == b"\x00\x01binary"


# -- backend failures -------------------------------------------------------------------------


async def test_slow_backend_gets_504(stack: Stack, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with session.post(f"{stack.lb.url}/slow?sleep=4", data=b"{}") as resp:
        assert resp.status == 504
        assert (await resp.json())["code"] == "gateway_timeout"
        assert resp.headers["X-Request-ID"]
    assert time.monotonic() - started < 3.5  # LB_FIRST_BYTE_TIMEOUT=1, not the backend's 4 s


async def test_failed_post_without_key_gets_502_and_is_not_resent(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    path = f"/api/bookings/once-{time.monotonic_ns()}"
    async with session.post(f"{stack.lb.url}{path}?reset=1", json={"seats": 1}) as resp:
        assert resp.status == 502
        assert (await resp.json())["code"] == "bad_gateway"
    seen = [line for b in stack.backends for line in b.records() if line.split()[1] == path]
    assert len(seen) == 1


# -- slowloris --------------------------------------------------------------------------------


async def test_slowloris_is_cut_off_at_the_header_deadline_while_others_are_served(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.lb.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    cut_off_after: float | None = None
    served = 0
    while time.monotonic() - started < 5:
        # one header byte every 0.2 s: never finishing the head
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            cut_off_after = time.monotonic() - started
            break
        async with session.get(f"{stack.lb.url}/meanwhile") as resp:
            served += resp.status == 200
        try:
            data = await asyncio.wait_for(reader.read(1024), 0.2)
        except TimeoutError:
            continue
        except ConnectionError:
            data = b""
        if not data:  # closed by the lb
            cut_off_after = time.monotonic() - started
            break
    writer.close()
    assert cut_off_after is not None, "slowloris connection was never closed"
    assert 1.0 <= cut_off_after <= 3.5  # LB_HEADER_TIMEOUT=1.5
    assert served >= 3


# -- HTTP/1.x corners -------------------------------------------------------------------------


def test_head_http10_pipelining_and_100_continue(stack: Stack) -> None:
    port = stack.lb.port
    # HEAD: the backend's headers, no body, and the connection stays usable
    raw = raw_request(
        port,
        b"HEAD /h?size=5000 HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert rest.startswith(b"HTTP/1.1 200"), rest[:100]  # no stray body bytes after HEAD
    assert b'"path": "/after"' in rest
    # HTTP/1.0: a body of unknown length ends with the connection
    raw = raw_request(port, b"GET /old?size=3000 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert len(body) == 3000
    # three pipelined requests are answered in order
    raw = raw_request(
        port,
        b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert raw.count(b"HTTP/1.1 200") == 3
    assert raw.index(b"/p1") < raw.index(b"/p2") < raw.index(b"/p3")
    # Expect: 100-continue is answered by the lb before the body is sent
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"body_bytes": 5' in answer


# -- abuse ------------------------------------------------------------------------------------


async def test_clients_vanishing_mid_stream_and_garbage_leave_nothing_behind(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    port = stack.lb.port
    # a download abandoned after the first megabyte
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /dl?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (50 * MB))
    await reader.readexactly(MB)
    writer.transport.abort()
    # an upload abandoned after the first megabyte of ten
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /ul HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (10 * MB))
    writer.write(b"u" * MB)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    # a response the client never reads, then garbage of every kind
    for blob in (
        b"GET /slow?sleep=0.3 HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 4,
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5,  # a head that never ends
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
    ):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(blob)
        await w.drain()
        w.transport.abort()
    # the lb is fine, and every attempt it started has been finished
    deadline = time.monotonic() + 10
    while True:
        status = stack.lb.status()
        busy = status["in_flight"] + sum(b["outstanding"] for b in status["backends"])
        if busy == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert busy == 0, status
    async with session.get(f"{stack.lb.url}/still-fine") as resp:
        assert resp.status == 200
    assert stack.lb.process.alive()


async def test_access_log_has_one_line_per_request_with_its_id(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process({**OPEN_ADMISSION, "LB_BACKENDS": backend.url, "LB_ACCESS_LOG": "1"})
    async with aiohttp.ClientSession() as session:
        for i in range(3):
            headers = {"X-Request-ID": f"trace-{i}"}
            async with session.get(f"{lb.url}/logged/{i}?q=secret", headers=headers) as resp:
                assert resp.status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in lb.process.log().splitlines() if " lb.access " in line]
        if len(lines) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert f'trace-{i} 127.0.0.1 "GET /logged/{i}" 200 127.0.0.1:{backend.port}' in line
        assert "secret" not in line  # query strings stay out of the log
