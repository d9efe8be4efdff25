"""The proxy in-process over in-memory backends (lb/http/memory.py): retries, the retry
budget, the breaker, ejection, malformed backend answers and a crashing handler, each in
milliseconds, with the fast path on and off. The process tests (test_proxy.py, test_resilience.py) prove the real sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lb.http.memory import MemoryRequest, Reply, respond
from tests.support import inproc
from tests.support.inproc import InProcessLb, statuses

GET = b"GET /api/tours/ HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(autouse=True, params=["1", "0"], ids=["fast-path", "coroutine-path"])
def request_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here on both request paths: the fast path (lb/fastpath.py) and without it."""
    monkeypatch.setitem(inproc.DEFAULT_ENV, "LB_FAST_PATH", request.param)


def always(reply: Reply) -> Callable[[MemoryRequest], Reply]:
    return lambda request: reply


def ok(name: str) -> Callable[[MemoryRequest], Reply]:
    return always(respond(200, json.dumps({"backend": name}).encode()))


def body_of(raw: bytes) -> dict[str, object]:
    return json.loads(raw.rsplit(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_an_idempotent_request_is_retried_after_a_backend_answers_5xx(status: int) -> None:
    lb = InProcessLb([always(respond(status)), ok("b1")], LB_ALGORITHM="round_robin")
    raw = await lb.send(GET)
    assert statuses(raw) == [200] and body_of(raw) == {"backend": "b1"}
    assert len(lb.backend(0).requests) == 1 and len(lb.backend(1).requests) == 1


async def test_a_post_without_key_is_not_resent_after_a_5xx() -> None:
    lb = InProcessLb([always(respond(502)), ok("b1")], LB_ALGORITHM="round_robin")
    raw = await lb.send(b"POST /api/bookings/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert statuses(raw) == [502]
    assert len(lb.backend(1).requests) == 0


CHUNKED_PUT = (
    b"PUT /api/things/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n"
)


async def test_a_streamed_body_that_reached_a_backend_is_never_resent() -> None:
    lb = InProcessLb(
        [always(Reply(then="reset")), ok("b1")],
        LB_ALGORITHM="round_robin",
        LB_REQUEST_BUFFERING="0",
    )
    raw = await lb.send(CHUNKED_PUT)
    assert statuses(raw) == [502]
    assert len(lb.backend(0).requests) == 1 and len(lb.backend(1).requests) == 0


async def test_a_buffered_body_may_be_resent() -> None:
    lb = InProcessLb([always(Reply(then="reset")), ok("b1")], LB_ALGORITHM="round_robin")
    raw = await lb.send(CHUNKED_PUT)
    assert statuses(raw) == [200]
    assert [r.body for r in lb.backend(1).requests] == [b"hello"]
    assert lb.backend(1).requests[0].headers["content-length"] == "5"


async def test_an_empty_retry_budget_stops_retries_after_reaching_a_backend() -> None:
    lb = InProcessLb(
        [always(respond(502)), ok("b1")],
        LB_ALGORITHM="round_robin",
        LB_RETRY_BUDGET="0",
        LB_RETRY_BUDGET_MIN="0",
    )
    assert statuses(await lb.send(GET)) == [502]
    assert lb.pool.retry_budget.active == 0  # every permit given back
    refused = InProcessLb(
        [always(respond(502)), ok("b1")],
        LB_ALGORITHM="round_robin",
        LB_RETRY_BUDGET="0",
        LB_RETRY_BUDGET_MIN="0",
    )
    refused.backend(0).refuse = True  # a connect failure did no work: always retried
    assert statuses(await refused.send(GET)) == [200]
    assert refused.pool.retry_budget.active == 0


async def test_the_breaker_opens_then_one_probe_closes_it() -> None:
    replies = [respond(502)] * 5 + [respond(200)]
    lb = InProcessLb(
        [lambda request: replies.pop(0)],
        LB_BREAKER_MIN_REQUESTS="5",
        LB_BREAKER_OPEN="5",
        LB_OUTLIER_FAILURES="1000",
    )
    for _ in range(5):
        assert statuses(await lb.send(GET)) == [502]
    raw = await lb.send(GET)
    assert statuses(raw) == [503] and body_of(raw)["code"] == "no_backend"
    lb.clock.advance(5)
    assert statuses(await lb.send(GET)) == [200]  # the half-open probe
    assert lb.pool.backends[0].breaker.state.value == "closed"


async def test_resets_eject_a_backend_while_retries_hide_it() -> None:
    lb = InProcessLb(
        [always(Reply(then="reset")), ok("b1"), ok("b2")],
        LB_OUTLIER_FAILURES="3",
        LB_BREAKER_MIN_REQUESTS="1000",
    )
    answers = [statuses(await lb.send(GET)) for _ in range(12)]
    assert answers == [[200]] * 12
    assert lb.pool.backends[0].outlier.ejected
    assert len(lb.backend(0).requests) == 3


async def test_500s_from_one_client_do_not_eject_but_from_many_do() -> None:
    lb = InProcessLb(
        [always(respond(500)), ok("b1")],
        LB_ALGORITHM="round_robin",
        LB_MAX_RETRIES="0",
        LB_OUTLIER_FAILURES="3",
    )
    for _ in range(20):
        await lb.send(GET, peer="203.0.113.7")
    assert not lb.pool.backends[0].outlier.ejected
    for i in range(20):
        await lb.send(GET, peer=f"198.51.100.{i}")
    assert lb.pool.backends[0].outlier.ejected


# -- malformed or out-of-step backend answers --------------------------------------------


async def test_a_bad_status_line_is_a_502() -> None:
    lb = InProcessLb([always(Reply(b"HTTX/1.1 200 OK\r\n\r\n"))])
    raw = await lb.send(GET)
    assert statuses(raw) == [502] and body_of(raw)["code"] == "bad_gateway"


async def test_an_interim_1xx_before_the_answer_is_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    lb = InProcessLb([always(Reply(early + respond(201, b'{"ok": 1}').data))])
    raw = await lb.send(GET)
    assert statuses(raw) == [201] and body_of(raw) == {"ok": 1}
    assert b"Link:" not in raw


async def test_stray_bytes_after_an_answer_retire_the_connection() -> None:
    lb = InProcessLb([always(Reply(respond(200, b'{"n": 1}').data + b"HTTP/1.1 200 OK\r\n"))])
    first = await lb.send(GET)
    second = await lb.send(GET)
    assert statuses(first) == [200] and statuses(second) == [200]
    assert body_of(second) == {"n": 1}
    assert lb.backend(0).connections == 2  # the out-of-step connection was not reused


async def test_a_kept_alive_connection_is_reused_when_clean() -> None:
    lb = InProcessLb([ok("b0")])
    for _ in range(3):
        assert statuses(await lb.send(GET)) == [200]
    assert lb.backend(0).connections == 1


async def test_a_crashing_handler_is_a_500_json_not_a_hang() -> None:
    lb = InProcessLb([ok("b0")])

    def crash(*args: object) -> object:
        raise RuntimeError("boom")

    lb.proxy.resolver.resolve = crash  # type: ignore[method-assign]
    raw = await lb.send(GET)
    assert statuses(raw) == [500] and body_of(raw)["code"] == "internal_error"
    assert b"Connection: close" in raw


def closes_second_request() -> Callable[[MemoryRequest], Reply]:
    """A backend that ends a kept-alive connection when its second request arrives (as
    gunicorn does when it will not drain a body it did not read), then answers afresh."""
    seen = 0

    def handler(request: MemoryRequest) -> Reply:
        nonlocal seen
        seen += 1
        return Reply(then="close") if seen == 2 else respond(200, b'{"n": %d}' % seen)

    return handler


async def test_a_reused_connection_closed_before_answering_is_retried_fresh() -> None:
    lb = InProcessLb([closes_second_request()])
    assert statuses(await lb.send(GET)) == [200]
    raw = await lb.send(GET)
    assert statuses(raw) == [200] and body_of(raw) == {"n": 3}
    assert lb.backend(0).connections == 2
    assert lb.pool.backends[0].failures == 0  # not the backend failing


async def test_a_post_is_not_resent_on_a_fresh_connection() -> None:
    lb = InProcessLb([closes_second_request()])
    post = b"POST /api/bookings/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert statuses(await lb.send(post)) == [200]
    assert statuses(await lb.send(post)) == [502]
    assert len(lb.backend(0).requests) == 2
