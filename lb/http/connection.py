"""One client connection: httptools parsing, limits, the header deadline, keep-alive, writing.

Requests on a connection are handled one at a time, in order (pipelined ones wait, with
reading paused). Anything malformed or oversized is answered in JSON and the connection
closed; a head that does not arrive within LB_HEADER_TIMEOUT (slowloris) closes it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httptools

from lb.errors import BadRequest, HeadersTooLarge, LbError, render_error
from lb.headers import X_REQUEST_ID
from lb.http.deadlines import Deadlines
from lb.http.flow import WriteFlow
from lb.http.request import LISTS, PLAIN_CONNECTION, WANTED, Body, BodyError, Request

log = logging.getLogger("lb.http")

Handler = Callable[[Request, "ClientConnection"], Awaitable[bool]]
# The fast path (lb/fastpath.py): True when it took the request without a coroutine
Take = Callable[[Request, "ClientConnection"], bool]


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What a client connection accepts: head size (LB_MAX_HEADER_BYTES) and the seconds a
    request head may take (LB_HEADER_TIMEOUT)."""

    max_header_bytes: int = 16384
    header_timeout: float = 10.0
    # One line of the head: below gunicorn's defaults (limit_request_line 4094,
    # limit_request_field_size 8190), so an oversized line is refused here, in JSON with a
    # request id, never by a replica's HTML page.
    max_request_line: int = 4000
    max_field_bytes: int = 8000
    linger: float = 2.0  # after refusing a body: read and drop it until quiet this long
    linger_max: float = 30.0  # ... but no longer than this in all (nginx's lingering_time)


class Host(Protocol):
    """What a client connection needs from the server that accepted it (lb/server.py)."""

    loop: asyncio.AbstractEventLoop
    limits: ClientLimits
    handler: Handler
    take: Take | None
    deadlines: Deadlines
    connections: set[ClientConnection]
    draining: bool

    def on_protocol_error(self, error: LbError) -> None: ...

    def request_id(self) -> str: ...


class _TooLarge(Exception):
    pass


class _LineTooLong(Exception):
    """The request target is longer than ClientLimits.max_request_line."""


class _FieldTooLong(Exception):
    """One header line is longer than ClientLimits.max_field_bytes."""


URI_TOO_LONG = 414


class ClientConnection(WriteFlow, asyncio.Protocol):
    """The server side of one client TCP connection."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.closed = False
        self.busy = False  # a request is being handled
        self.response_started = False
        self.tunnel: Callable[[bytes], None] | None = None  # raw bytes go here (WebSocket)
        self.tunnel_closed: Callable[[], None] | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._queue: deque[Request] = deque()
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._wanted: dict[bytes, bytes] = {}
        self._head_bytes = 0
        self._body: Body | None = None
        self._current: Request | None = None
        self.deadline = 0.0  # the request head must be complete by then (Deadlines)
        self._taking = False  # the fast path is deciding on a request (see `_start`)
        self._up_next: Request | None = None
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._client_eof = False
        self._in_trailers = False  # the head is done: header lines now are trailers
        self._deferred: LbError | None = None  # a bad request behind good pipelined ones
        self._lingering: asyncio.TimerHandle | None = None
        self._linger_until = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._lingering is not None:
            self._lingering.cancel()
        self.server.connections.discard(self)
        self._disarm_deadline()
        if self._body is not None:
            self._body.fail(BodyError("the client closed the connection"))
        for request in self._queue:
            if request.body is not None:
                request.body.fail(BodyError("the client closed the connection"))
        self._release_drain()
        if self.tunnel_closed is not None:
            self.tunnel_closed()
        # the parser and the transport point back at us: without these cycles the
        # connection is freed by reference counting, not left to the garbage collector
        self._parser = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if self._lingering is not None:
            self._linger_more()  # a refused body: drop it while the client finishes
            return
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._upgraded(data[offset:])
        except _TooLarge:
            self._fail(HeadersTooLarge(self._too_large_detail()))
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TooLarge):
                self._fail(HeadersTooLarge(self._too_large_detail()))
            elif isinstance(exc.__context__, (_LineTooLong, _FieldTooLong)):
                self._fail(self._line_error(isinstance(exc.__context__, _LineTooLong)))
            else:
                log.exception("request parsing failed")
                self._fail(BadRequest("Malformed HTTP request."))
        except httptools.HttpParserError as exc:
            self._fail(BadRequest(f"Malformed HTTP request: {exc}."))

    def eof_received(self) -> bool | None:
        self._client_eof = True
        if self._body is not None and not self._body.eof:
            self._body.fail(BodyError("the client closed the connection mid-body"))
        # keep the write side open while a response is owed
        return self.busy or bool(self._queue)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_trailers = False
        self._url = b""
        self._raw = []
        self._wanted = {}
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if len(self._url) > self.server.limits.max_request_line:
            raise _LineTooLong
        if self._head_bytes > self.server.limits.max_header_bytes:
            raise _TooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.server.limits.max_header_bytes:
            raise _TooLarge
        if self._in_trailers:
            return  # trailers are dropped: no filter in front of us saw them
        if len(name) + len(value) + 2 > self.server.limits.max_field_bytes:
            raise _FieldTooLong
        self._raw.append((name, value))
        lname = name.lower()
        if lname in WANTED and not (lname == b"connection" and value.lower() in PLAIN_CONNECTION):
            # a Connection header is kept only when it names headers that must be dropped
            seen = self._wanted.get(lname)
            if seen is not None and lname in LISTS:
                value = seen + b", " + value
            self._wanted[lname] = value

    def on_headers_complete(self) -> None:
        self._in_trailers = True
        self._disarm_deadline()
        parser = self._parser
        assert parser is not None  # we are called from its feed_data
        wanted = self._wanted
        has_body = b"content-length" in wanted and wanted[b"content-length"] not in (b"0",)
        has_body = has_body or b"chunked" in wanted.get(b"transfer-encoding", b"").lower()
        body = Body(self.loop, self._pause_reading, self._resume_reading) if has_body else None
        self._body = body
        request = Request(
            method=parser.get_method().decode("ascii"),
            target=self._url.decode("latin-1"),
            version=parser.get_http_version(),
            raw_headers=self._raw,
            headers=wanted,
            header_bytes=self._head_bytes,
            keep_alive=parser.should_keep_alive(),
            upgrade=parser.should_upgrade(),
            peer=self.peer,
            body=body,
        )
        if self.busy or self._queue:
            self._queue.append(request)
            self._pause_reading()  # one request at a time; pipelined ones wait
        else:
            self._start(request)

    def on_body(self, data: bytes) -> None:
        if self._body is not None:
            self._body.feed(data)

    def on_message_complete(self) -> None:
        if self._body is not None:
            self._body.feed_eof()
            self._body = None

    # -- handling ------------------------------------------------------------------------------

    def _start(self, request: Request | None) -> None:
        while request is not None:
            self.busy = True
            self.response_started = False
            self._current = request
            take = self.server.take
            if take is None:
                break
            self._taking = True
            try:
                taken = take(request, self)
            finally:
                self._taking = False
            if not taken:
                break
            if self.busy:
                return  # the fast path has it: `done()` or `hand_over()` follows
            # answered at once (a refusal): the next pipelined request is started here, in
            # this loop, rather than by `done()` in a recursion as deep as the pipeline
            request, self._up_next = self._up_next, None
        else:
            return
        self.loop.create_task(self._serve(request, self.server.handler(request, self)))

    def hand_over(self, request: Request, work: Awaitable[bool]) -> None:
        """The fast path gives the rest of `request` to a task (lb/fastpath.py)."""
        self.loop.create_task(self._serve(request, work))

    async def _serve(self, request: Request, work: Awaitable[bool]) -> None:
        """Answer one request (`work` is the handler's coroutine for it), then go on."""
        keep = False
        try:
            keep = await work
        except Exception:
            log.exception("request handler failed")
            if not self.response_started and not self.closed:
                rid = ((X_REQUEST_ID, self.server.request_id()),)
                self.write(render_error(LbError(), rid, close=True))
        self.done(request, keep)

    def done(self, request: Request, keep: bool) -> None:
        """`request` is answered; `keep`: the connection may carry another one. Starts the
        next pipelined request, or waits for one (the head deadline armed), or closes."""
        self.busy = False
        self.response_started = False
        self._current = None
        unread = request.body is not None and not request.body.done
        if unread and not self.closed:
            self._start_lingering()
            return
        if not keep or self.server.draining or not request.keep_alive:
            self.close()
            return
        if self._client_eof and not self._queue:
            self.close()  # the client has nothing more to send
            return
        if self.closed:
            return
        if self._queue:
            request = self._queue.popleft()
            if self._taking:
                self._up_next = request  # `_start()` is on the stack: its loop takes it
            else:
                self._start(request)
            if not self._queue and self._deferred is None:
                self._resume_reading()
            return
        if self._deferred is not None:
            # the good requests before it are answered: now the bad one
            error, self._deferred = self._deferred, None
            self._fail(error)
            return
        self._arm_deadline()
        self._resume_reading()

    def _upgraded(self, tail: bytes) -> None:
        # the head of an Upgrade request is complete; what follows is not HTTP
        request = self._current if self.busy else (self._queue[-1] if self._queue else None)
        if request is not None:
            request.tunnel_data = tail
        if request is not None:
            # whatever follows is not HTTP any more: after this answer (or tunnel), close
            request.keep_alive = False
        self._pause_reading()

    def _fail(self, error: LbError) -> None:
        """Answer a protocol error (if nothing else is being answered) and close."""
        if self.closed:
            return
        if self._body is None and (self.busy or self._queue):
            # a bad request pipelined behind good ones: they are answered first
            self._deferred = self._deferred or error
            self._pause_reading()
            return
        if not self.response_started:
            # e.g. broken chunked framing while the request is being proxied: the request
            # cannot go on, but the client still learns why
            self.server.on_protocol_error(error)
            rid = ((X_REQUEST_ID, self.server.request_id()),)
            self.write(render_error(error, rid, close=True))
        if self._body is not None:
            self._body.fail(BodyError(error.detail))
        self.close()

    def _line_error(self, target: bool) -> LbError:
        limits = self.server.limits
        if target:
            return LbError(
                f"The request target exceeds {limits.max_request_line} bytes.",
                status=URI_TOO_LONG,
                code="uri_too_long",
            )
        return HeadersTooLarge(f"A header line exceeds {limits.max_field_bytes} bytes.")

    def _start_lingering(self) -> None:
        """Close after refusing a body as nginx does (lingering close): send our end, then
        read and drop what the client still sends until it is quiet, so the answer is
        read rather than lost to a reset."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._body is not None:
            self._body = None  # what still comes is dropped
        self._lingering = self.loop.call_later(self.server.limits.linger, self.close)
        self._linger_until = self.loop.time() + self.server.limits.linger_max
        self._resume_reading()
        if transport.can_write_eof():
            transport.write_eof()

    def _linger_more(self) -> None:
        if self._lingering is not None:
            self._lingering.cancel()
            if self.loop.time() >= self._linger_until:
                self.close()  # a client that never stops sending gets cut off
                return
            self._lingering = self.loop.call_later(self.server.limits.linger, self.close)

    def _too_large_detail(self) -> str:
        limit = self.server.limits.max_header_bytes
        return f"The request head exceeds {limit} bytes (LB_MAX_HEADER_BYTES)."

    def expire(self) -> None:
        """The head deadline passed (called by Deadlines)."""
        if not self.busy and not self.closed and self.transport is not None:
            # slowloris, or an idle keep-alive connection: either way, goodbye
            self.transport.close()

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        self.response_started = True
        transport.write(data)

    async def drain(self) -> None:
        await self._wait_writable(self.loop)
        if self.closed:
            raise ConnectionResetError("the client connection is closed")

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close_if_idle(self) -> None:
        if not self.busy:
            self.close()

    # -- internals -----------------------------------------------------------------------------

    def _arm_deadline(self) -> None:
        self.server.deadlines.arm(self, self.server.limits.header_timeout)

    def _disarm_deadline(self) -> None:
        self.server.deadlines.disarm(self)

    def resume_reading(self) -> None:
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()
