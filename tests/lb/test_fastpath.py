"""The fast path (lb/fastpath.py), in-process over in-memory backends: what it answers by
callback, what it hands to the coroutine path from where it stands (a 5xx retried, a dead
kept-alive connection resent, a first-byte timeout), and that both paths answer alike.

Every request on a client connection after the first finds a kept-alive backend connection,
so pipelined requests are the fast path's; the first one connects in the coroutine path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from lb.http.connection import ClientConnection, ClientLimits
from lb.http.memory import MemoryRequest, Reply, respond
from lb.http.request import Request
from lb.server import Server
from tests.support.inproc import InProcessLb, answers, statuses

GET = b"GET /api/tours/ HTTP/1.1\r\nHost: x\r\n\r\n"


def numbered(name: str, fail: Callable[[int], Reply | None] = lambda n: None) -> Callable:
    """A backend answering {"backend": name, "n": n}, unless `fail(n)` says otherwise."""
    seen = 0

    def handler(request: MemoryRequest) -> Reply:
        nonlocal seen
        seen += 1
        return fail(seen) or respond(200, json.dumps({"backend": name, "n": seen}).encode())

    return handler


def bodies(raw: bytes) -> list[dict[str, object]]:
    return [json.loads(body) for _, _, body in answers(raw)]


async def test_warm_requests_are_answered_by_callback_like_the_coroutine_path() -> None:
    fast, slow = InProcessLb([numbered("b0")]), InProcessLb([numbered("b0")], LB_FAST_PATH="0")
    raws = [await lb.send(GET * 5) for lb in (fast, slow)]
    assert [statuses(raw) for raw in raws] == [[200] * 5] * 2
    assert [b["n"] for b in bodies(raws[0])] == [1, 2, 3, 4, 5]
    assert fast.fast is not None and (fast.fast.taken, fast.fast.relayed) == (5, 4)
    assert fast.backend(0).connections == 1  # one kept-alive connection carried them all
    # the same answer heads, but for the request id
    strip = [
        [line for line in head.split(b"\r\n") if not line.startswith(b"X-Request-ID")]
        for raw in raws
        for _, head, _ in answers(raw)
    ]
    assert strip[:5] == strip[5:]
    assert fast.proxy.ledger.in_flight == 0 and fast.pool.in_flight == 0


async def test_a_warm_5xx_is_retried_on_another_backend() -> None:
    lb = InProcessLb(
        [numbered("b0", lambda n: respond(502) if n == 2 else None), numbered("b1")],
        LB_ALGORITHM="round_robin",
    )
    raw = await lb.send(GET * 4)
    assert statuses(raw) == [200] * 4
    assert [b["backend"] for b in bodies(raw)] == ["b0", "b1", "b1", "b0"]
    # the 3rd went out by callback on b0's kept-alive connection and was resumed; the
    # others found no idle connection (the 502's was dropped) and connected
    assert lb.fast is not None and (lb.fast.taken, lb.fast.relayed) == (4, 0)
    assert lb.pool.in_flight == 0 and all(b.outstanding == 0 for b in lb.pool.backends)


async def test_a_kept_alive_connection_dying_unanswered_is_resent_fresh() -> None:
    lb = InProcessLb([numbered("b0", lambda n: Reply(then="close") if n == 2 else None)])
    raw = await lb.send(GET * 2)
    assert statuses(raw) == [200, 200] and bodies(raw)[1]["n"] == 3
    assert lb.backend(0).connections == 2
    assert lb.pool.backends[0].failures == 0  # not the backend failing
    assert lb.fast is not None and (lb.fast.taken, lb.fast.relayed) == (2, 0)


async def test_a_warm_request_past_its_first_byte_timeout_is_a_504() -> None:
    lb = InProcessLb(
        [numbered("b0", lambda n: Reply(then="hang") if n >= 2 else None)],
        LB_FIRST_BYTE_TIMEOUT="0.2",
    )
    raw = await lb.send(GET * 2)
    assert statuses(raw) == [200, 504]
    assert json.loads(answers(raw)[1][2])["code"] == "gateway_timeout"
    assert lb.pool.in_flight == 0
    assert lb.fast is not None and (lb.fast.taken, lb.fast.relayed) == (2, 0)


async def test_pipelined_refusals_answered_at_once_do_not_recurse() -> None:
    # a bucket of 5: the rest of 3000 pipelined GETs are 429s, each answered synchronously
    lb = InProcessLb(
        [numbered("b0")], admission=True, BUCKET_CAPACITY="5", LEAK_RATE="0.001", LB_RATE_RULES=""
    )
    raw = await lb.send(GET + GET * 3000, within=30)
    got = statuses(raw)
    assert len(got) == 3001 and got.count(200) == 5 and got.count(429) == 2996
    assert lb.fast is not None and lb.fast.taken == 3001
    assert lb.proxy.ledger.in_flight == 0


async def test_the_connection_loop_starts_each_pipelined_request_once() -> None:
    """A `take` that answers at once: 5000 pipelined requests, no recursion, in order."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def take(request: Request, client: ClientConnection) -> bool:
        seen.append(request.target)
        client.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        client.done(request, True)
        return True

    async def never(request: Request, client: ClientConnection) -> bool:
        raise AssertionError("the coroutine path was not needed")

    server = Server(never, ClientLimits(), loop=loop, take=take)
    conn = server()

    class Sink(asyncio.Transport):
        data = bytearray()

        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("10.0.0.1", 1) if name == "peername" else default

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.data += data

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    sink = Sink()
    conn.connection_made(sink)
    conn.data_received(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5000)))
    assert seen == [f"/{i}" for i in range(5000)]
    assert sink.data.count(b"HTTP/1.1 204") == 5000
    assert not conn.busy
    await server.deadlines.close()


@pytest.mark.parametrize("fast", ["1", "0"])
async def test_head_and_no_content_answers_carry_no_body(fast: str) -> None:
    def handler(request: MemoryRequest) -> Reply:
        if request.method == "HEAD":
            return Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n")
        return Reply(b"HTTP/1.1 204 No Content\r\n\r\n")

    lb = InProcessLb([handler], LB_FAST_PATH=fast)
    head = b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = await lb.send(GET + head + GET)
    assert raw.count(b"HTTP/1.1 ") == 3
    assert b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n" in raw
    assert raw.endswith(b"\r\n\r\n")  # the HEAD's and the 204's: heads only
