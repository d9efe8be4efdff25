"""The public side's own rules, in-process: trailers dropped, pipelined requests answered in
order before a bad one, the lb's own 400/414/431 in JSON with an X-Request-ID, and exactly
one X-Request-ID on every answer."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from lb.http.memory import MemoryRequest, Reply, respond
from tests.support.inproc import InProcessLb, statuses

GET = b"GET /api/tours/ HTTP/1.1\r\nHost: x\r\n\r\n"


def echo(request: MemoryRequest) -> Reply:
    body = {"headers": request.headers, "body": request.body.decode(), "target": request.target}
    return respond(200, json.dumps(body).encode())


def heads(raw: bytes) -> list[str]:
    return [part.split("\r\n\r\n")[0] for part in raw.decode("latin-1").split("HTTP/1.1 ")[1:]]


@pytest.mark.parametrize("buffering", ["0", "1"])
async def test_request_trailers_never_reach_the_backend(buffering: str) -> None:
    lb = InProcessLb([echo], LB_REQUEST_BUFFERING=buffering)
    raw = await lb.send(
        b"POST /api/things/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: X-Evil\r\n\r\n5\r\nhello\r\n0\r\n"
        b"X-Evil: 1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-ID: forged\r\n\r\n",
        peer="10.1.2.3",
    )
    assert statuses(raw) == [200]
    seen = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert seen["body"] == "hello"
    assert "x-evil" not in seen["headers"]
    assert seen["headers"]["x-forwarded-for"] == "10.1.2.3"
    assert seen["headers"]["x-request-id"] != "forged"


async def test_good_pipelined_requests_are_answered_before_a_bad_one() -> None:
    lb = InProcessLb([echo])
    raw = await lb.send(GET + GET.replace(b"tours", b"other") + b"NOT HTTP AT ALL\r\n\r\n")
    assert statuses(raw) == [200, 200, 400]
    bad = heads(raw)[2]
    assert "X-Request-ID: " in bad and "Connection: close" in bad
    assert raw.endswith(b'"code": "bad_request"}')


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "bad_request"),
        (b"GET /" + b"a" * 4100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8100 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (b"GET / HTTP/1.1\r\n" + b"X-Many: " + b"m" * 3000 + b"\r\n" * 1, 200, ""),
    ],
)
async def test_the_lbs_own_errors_are_json_with_a_request_id(
    raw: bytes, status: int, code: str
) -> None:
    lb = InProcessLb([echo])
    if status == 200:  # a long but legal line passes (and is forwarded)
        raw += b"Host: x\r\n\r\n"
    answer = await lb.send(raw)
    assert statuses(answer) == [status]
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.count(b"X-Request-ID: ") == 1
    if code:
        assert json.loads(body)["code"] == code
        assert lb.backend(0).requests == []


async def test_every_answer_carries_exactly_one_request_id() -> None:
    lb = InProcessLb([lambda request: respond(200, b"{}", ("X-Request-ID: backend-own",))])
    raw = await lb.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: mine-1\r\n\r\n")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"X-Request-ID") == 1 and b"X-Request-ID: mine-1" in head


async def test_a_refused_body_is_drained_then_the_connection_closes() -> None:
    lb = InProcessLb([echo], LB_MAX_BODY_BYTES="10")
    lb.server.limits = replace(lb.server.limits, linger=0.05, linger_max=0.3)
    conn, transport = lb.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    conn.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nzz")
    await asyncio.sleep(0.01)
    assert statuses(bytes(transport.data)) == [413] and transport.eof_sent
    assert not transport.closed.done()  # still reading what the client sends
    while not transport.closed.done() and loop.time() - started < 2:
        conn.data_received(b"z" * 1000)  # a client that never stops
        await asyncio.sleep(0.02)
    assert transport.closed.done()
    assert 0.25 <= loop.time() - started < 1.0  # cut off at linger_max
    assert lb.backend(0).requests == []
