"""One attempt on one backend: a connection, the request sent, the response head awaited.

The attempt ends in one of two ways: a connection whose response head arrived (the caller
relays it and reports the outcome), or a `Failed` saying how it failed and whether the
request may have reached the backend. Anything the client caused (its body stalled or was
too large, it went away, the task was cancelled) is raised, the connection closed first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lb.cache.edge import Fill
from lb.errors import BadGateway, GatewayTimeout, LbError
from lb.http.connection import ClientConnection
from lb.http.request import Request
from lb.http.upstream import (
    ConnectFailed,
    KeepAlivePool,
    UpstreamClosed,
    UpstreamConnection,
    UpstreamError,
)
from lb.upstream.backend import Outcome

SendBody = Callable[[UpstreamConnection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The upstream side's timeouts, seconds (LB_CONNECT_TIMEOUT, LB_FIRST_BYTE_TIMEOUT)."""

    connect: float = 1.0
    first_byte: float = 30.0


@dataclass(slots=True)
class Exchange:
    """One request on its way to a backend: what every attempt sends, and who asked."""

    request: Request
    client: ClientConnection
    head: bytes  # the request head for the backend (with the body when it is small)
    send_body: SendBody | None  # sends what follows the head (lb/upload.py)
    streamed: bool  # the body comes from the client as we send it: it cannot be re-sent
    answer_headers: tuple[tuple[str, str], ...]  # X-Request-ID, RateLimit fields
    client_key: str  # for the pool's one-client rule
    deadline: float
    upgrade: bool
    # sending it twice is harmless (idempotent method or Idempotency-Key, body not streamed)
    resend_safe: bool = False
    fill: Fill | None = None  # the micro-cache's capture of the answer (lb/cache/)
    measure: bool = False  # measure the next attempt's latency (the admitter asked)

    @property
    def retry_key(self) -> tuple[str, bool]:
        """What the retry policy judges: the method, and whether an Idempotency-Key came."""
        return self.request.method, b"idempotency-key" in self.request.headers


@dataclass(frozen=True, slots=True)
class Failed:
    """An attempt that got no response head."""

    outcome: Outcome
    reached: bool  # the request may have reached the backend
    error: LbError  # the answer if nothing better comes of a retry


async def attempt(
    conns: KeepAlivePool, ex: Exchange, timeouts: Timeouts
) -> UpstreamConnection | Failed:
    """Send one request on one backend's connection and wait for the response head.

    An upgrade attempt takes a fresh connection and never marks the request sent: it is
    not reused, even if the backend refuses the upgrade. A kept-alive connection that the
    backend closed before answering a byte (its idle timeout, or it chose not to drain the
    previous body) is not the backend failing: a request safe to resend goes again on a
    fresh connection (as Go's http.Transport does).
    """
    idle = None if ex.upgrade else conns.take_idle()
    result = await _once(idle, conns, ex, timeouts)
    if resend_fresh(result, idle, ex):
        result = await _once(None, conns, ex, timeouts)
    return result


async def fresh(
    conns: KeepAlivePool, ex: Exchange, timeouts: Timeouts
) -> UpstreamConnection | Failed:
    """The attempt again on a new connection (see `resend_fresh`)."""
    return await _once(None, conns, ex, timeouts)


def resend_fresh(
    result: UpstreamConnection | Failed, idle: UpstreamConnection | None, ex: Exchange
) -> bool:
    """Did a kept-alive connection die under the request before answering a byte, for a
    request that is safe to send again on a fresh one?"""
    return (
        isinstance(result, Failed)
        and idle is not None
        and not idle.answered_any
        and isinstance(idle.error, UpstreamClosed)
        and ex.resend_safe
    )


def start(conn: UpstreamConnection, ex: Exchange) -> None:
    """Send a bodiless request on `conn` without awaiting (the fast path, lb/fastpath.py);
    UpstreamError if the connection is already gone."""
    conn.begin(head_only=ex.request.method == "HEAD")
    conn.write(ex.head)
    conn.sent(ex.measure)
    conn.request_sent = True


def settle(conn: UpstreamConnection) -> UpstreamConnection | Failed:
    """How a started attempt ended once its connection has news (`UpstreamConnection.listen`):
    the connection with its response head, or what `_once` makes of the failure."""
    if conn.head_done:
        return conn
    if conn.timed_out:
        conn.abort()
        return Failed(Outcome.TIMEOUT, True, GatewayTimeout())
    if conn.error is None:
        conn.error = UpstreamClosed("backend closed the connection")
    conn.abort()
    error = conn.error
    return Failed(Outcome.RESET, error.reached, BadGateway(f"Backend failed: {error}"))


async def _once(
    conn: UpstreamConnection | None, conns: KeepAlivePool, ex: Exchange, timeouts: Timeouts
) -> UpstreamConnection | Failed:
    loop = conns.loop  # (asyncio.get_running_loop() costs a getpid() system call)
    deadline = ex.deadline
    try:
        if conn is None:
            async with asyncio.timeout(min(timeouts.connect, deadline - loop.time())):
                conn = await conns.connect()
        conn.begin(head_only=ex.request.method == "HEAD")
        conn.write(ex.head)
        conn.sent(ex.measure)
        if ex.send_body is not None:
            await ex.send_body(conn)
        elif not ex.upgrade:
            conn.request_sent = True
        await conn.read_head(min(timeouts.first_byte, deadline - loop.time()))
        return conn
    except ConnectFailed as exc:
        return Failed(Outcome.CONNECT_FAILURE, False, BadGateway(f"Backend unreachable: {exc}"))
    except TimeoutError:
        if conn is None:
            return Failed(
                Outcome.CONNECT_FAILURE, False, BadGateway("Connecting to the backend timed out.")
            )
        conn.abort()
        return Failed(Outcome.TIMEOUT, True, GatewayTimeout())
    except UpstreamError as exc:
        if conn is not None:
            if conn.error is None:
                conn.error = exc
            conn.abort()
        return Failed(Outcome.RESET, exc.reached, BadGateway(f"Backend failed: {exc}"))
    except BaseException:  # the client's doing, or cancelled
        if conn is not None:
            conn.abort()
        raise
