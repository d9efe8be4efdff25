"""The request body on its way up: whether it is received whole first, and how it is sent."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Final

from lb import headers as h
from lb.attempt import Exchange, SendBody
from lb.cache.edge import Fill
from lb.errors import BodyTooLarge, RequestTimeout
from lb.http.connection import ClientConnection
from lb.http.pump import Stalled, pump
from lb.http.request import Body, BodyError, Request
from lb.http.spool import BufferedBody, ClientGone, receive_body
from lb.http.upstream import UpstreamConnection
from lb.options import ProxyOptions
from lb.upstream.retry import IDEMPOTENT_METHODS

Headers = tuple[tuple[str, str], ...]
REPLAYABLE_BODY: Final = 64 * 1024  # bodies up to this size are always read first
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


async def prepare(
    request: Request,
    client: ClientConnection,
    options: ProxyOptions,
    upstream_extra: Headers,
    answer_headers: Headers,
    client_key: str,
    fill: Fill | None,
    now: float,
) -> tuple[Exchange, BufferedBody | None]:
    """What every attempt sends: the head, and the body received whole first (request
    buffering) or streamed; the caller closes the returned buffered body when done."""
    upgrade = request.upgrade and (request.header(b"upgrade") or "").lower() == "websocket"
    body: Body | BufferedBody | None = request.body
    if body is not None and (request.header(b"expect") or "").lower() == "100-continue":
        client.write(CONTINUE)
        client.response_started = False  # an interim answer: the real one is still owed
    if isinstance(body, Body) and not upgrade and buffers(request, options):
        # the whole body first, then a backend: a slow client holds a socket of ours,
        # never a replica's thread; and a retry can send the body again
        body = await receive_body(
            body,
            limit=options.max_body_bytes,
            memory=options.body_memory_bytes,
            idle_timeout=options.idle_timeout,
        )
    buffered = body if isinstance(body, BufferedBody) else None
    ex = exchange(
        request, client, options, upstream_extra, answer_headers, client_key, fill, now,
        body, upgrade,
    )  # fmt: skip
    return ex, buffered


def exchange(
    request: Request,
    client: ClientConnection,
    options: ProxyOptions,
    upstream_extra: Headers,
    answer_headers: Headers,
    client_key: str,
    fill: Fill | None,
    now: float,
    body: Body | BufferedBody | None,
    upgrade: bool,
) -> Exchange:
    """The Exchange for a request whose body, if any, is received (or will be streamed):
    the fast path (lb/fastpath.py) builds its bodiless ones here, without awaiting."""
    buffered = body if isinstance(body, BufferedBody) else None
    head = request_head(request, upstream_extra, buffered, upgrade)
    if buffered is not None and not buffered.spooled:
        head += buffered.data()  # one write with the head
        body = None
    # (not `client.loop`: a background refresh of the micro-cache has a stand-in client)
    deadline = now + options.request_deadline
    sender = None
    if body is not None:
        sender = upload(
            body,
            chunked=request.chunked,
            limit=options.max_body_bytes,
            idle_timeout=options.idle_timeout,
            deadline=deadline,
        )
    streamed = isinstance(body, Body)
    resend_safe = not streamed and (
        request.method in IDEMPOTENT_METHODS or b"idempotency-key" in request.headers
    )
    return Exchange(
        request, client, head, sender, streamed, answer_headers, client_key, deadline,
        upgrade, resend_safe, fill,
    )  # fmt: skip


def check_length(request: Request, limit: int) -> None:
    """A declared body over the limit is refused before any of it is read."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(
            f"Request body of {length} bytes exceeds {limit} bytes (LB_MAX_BODY_BYTES)."
        )


def buffers(request: Request, options: ProxyOptions) -> bool:
    """Is this request's body received whole before a backend is taken?"""
    length = request.content_length
    if length is not None and length <= REPLAYABLE_BODY:
        return True  # small: one write with the head, and replayable, whatever the switch
    if not options.request_buffering:
        return False
    return not request.path.startswith(options.stream_paths)


def request_head(
    request: Request, extra: Headers, buffered: BufferedBody | None, upgrade: bool
) -> bytes:
    """The head sent upstream: a received body goes with its length, not chunked."""
    return h.upstream_head(
        request.method,
        request.target,
        request.raw_headers,
        extra=extra,
        content_length=buffered.size if buffered is not None else request.content_length,
        chunked=request.chunked and buffered is None,
        default_host="",
        keep_upgrade=upgrade,
        scan_connection=b"connection" in request.headers,
    )


def upload(
    body: Body | BufferedBody,
    *,
    chunked: bool,
    limit: int,
    idle_timeout: float,
    deadline: float,
) -> SendBody:
    """Sends the body after the head: streamed from the client (framed as it came), or from
    the spool (at the backend's pace, within the request deadline). A body the backend
    answered before it was sent whole leaves the connection unusable (`request_sent`)."""

    async def send(conn: UpstreamConnection) -> None:
        read: Callable[[], Awaitable[bytes]]
        if isinstance(body, BufferedBody):
            blocks = iter(body.blocks())

            async def read() -> bytes:
                return next(blocks, b"")

        else:
            read = _client_reader(body, limit)
        streamed = isinstance(body, Body)
        try:
            done = await pump(
                read,
                conn.write,
                conn.drain,
                chunked=streamed and chunked,
                idle_timeout=idle_timeout,
                deadline=math.inf if streamed else deadline,
                stop=lambda: conn.head_done,  # answered early: stop sending
            )
        except Stalled as stalled:
            if stalled.reading and streamed:
                raise RequestTimeout() from None
            raise TimeoutError from None  # the backend stopped reading
        # only a body framed to its end lets the connection be reused (request smuggling)
        conn.request_sent = done

    return send


def _client_reader(body: Body, limit: int) -> Callable[[], Awaitable[bytes]]:
    sent = 0

    async def read() -> bytes:
        nonlocal sent
        try:
            chunk = await body.read()
        except BodyError as exc:
            raise ClientGone(str(exc)) from None
        sent += len(chunk)
        if sent > limit:
            raise BodyTooLarge(f"Request body exceeds {limit} bytes (LB_MAX_BODY_BYTES).")
        return chunk

    return read
