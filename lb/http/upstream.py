"""The upstream HTTP/1.1 client: one asyncio protocol per connection, keep-alive pools per backend.

Parsing is httptools (llhttp, C). A connection carries one request at a time; its response
body is handed over chunk by chunk with back-pressure (reading pauses while the consumer
lags), so no body is ever held whole. Timeouts belong to the caller (`asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import httptools

from lb.http.deadlines import Deadlines
from lb.http.flow import HIGH_WATER, LOW_WATER, WriteFlow

_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close"})
IDLE_TTL: Final = 1.5  # seconds an idle connection is trusted; below typical backend keep-alive
# The least latency `backend_latency()` reports: below a millisecond a backend is not
# queueing, and ratios of microseconds (the lower bound is often ~0 while the loop is busy)
# are noise that would swing the adaptive limits (lb/upstream/limit.py) to their floor.
LATENCY_FLOOR: Final = 0.001


class _BusyClock:
    """Seconds this thread has spent running or waiting for a CPU: on Linux the first two
    fields of /proc/thread-self/schedstat (one pread), elsewhere its CPU time. Opened on the
    first call, from the event loop's thread."""

    def __init__(self) -> None:
        self._fd = -1
        self._tried = False

    def __call__(self) -> float:
        fd = self._fd
        if fd < 0:
            if self._tried:
                return time.thread_time()
            self._tried = True
            try:
                fd = self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            except OSError:
                return time.thread_time()
        running, waiting, _ = os.pread(fd, 64, 0).split()
        return (int(running) + int(waiting)) / 1e9


busy_clock = _BusyClock()


class UpstreamError(Exception):
    """The backend could not be used; `reached` says whether the request may have reached it."""

    reached: bool = True


class ConnectFailed(UpstreamError):
    reached = False


class UpstreamClosed(UpstreamError):
    """The connection dropped before the response was complete."""


class UpstreamProtocolError(UpstreamError):
    """The backend answered something that is not HTTP/1.x."""


class UpstreamConnection(WriteFlow, asyncio.Protocol):
    """One keep-alive connection to a backend. `begin()` before each request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadlines: Deadlines | None = None) -> None:
        self._loop = loop
        self._deadlines = deadlines
        self.deadline = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_used = 0.0
        # wall clock and this thread's busy clock at the request head's write and at the
        # response head's arrival: see `backend_latency()`
        self.sent_at = self.sent_cpu = 0.0
        self.head_at = self.head_cpu = 0.0
        self.measured = False  # this request's latency is being measured (see `sent()`)
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._head_only = False
        self._until_eof = False
        self.error: UpstreamError | None = None
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.head_done = False
        self.complete = False
        self.length_known = False  # the response carries Content-Length
        self.has_connection_header = False
        self._timed_out = False
        # the whole request (head and framed body) was written: see `reusable()`
        self.request_sent = False
        self.answered_early = False
        self.answered_any = False
        self.upgraded = False
        self.tunnel_tail = b""  # bytes after a 101 head: the upgraded protocol's
        self.tunnel: Callable[[bytes], None] | None = None
        self.tunnel_closed: Callable[[], None] | None = None
        # instead of a reader awaiting `read_head()`: called once with news (see `listen()`)
        self.listener: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        parser = self._parser
        if parser is None or self.complete:
            # bytes nobody asked for: the connection is out of step, never reuse it
            self.keep_alive = False
            if self.transport is not None:
                self.transport.close()
            return
        self.answered_any = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.tunnel_tail = data[offset:]
            self.upgraded = True
            self.keep_alive = False
            self.complete = True
            self._wake()
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"bad response from backend: {exc}"))
            if self.transport is not None:
                self.transport.close()
        if self.listener is not None and (self.head_done or self.error is not None):
            self._notify()  # after the whole read: a small answer is complete by now

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel_closed is not None:
            self.tunnel_closed()
        if self.head_done and not self.complete and self._until_eof and exc is None:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        elif not self.complete:
            self._fail(UpstreamClosed("backend closed the connection"))
        self._release_drain()
        self._notify()
        # the parser and the transport point back at us: without these cycles a closed
        # connection is freed by reference counting, not left to the garbage collector
        self._parser = None
        self.transport = None

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # a second answer to one request: the connection is out of step, never reuse it
            self.keep_alive = False

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # an interim answer (100 Continue, 103 Early Hints): wait for the real one
            self.headers = []
            self.reason = ""
            return
        if self.measured:
            self.head_at, self.head_cpu = time.perf_counter(), busy_clock()
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        length = framed = False
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length":
                length = framed = True
            elif lname == b"transfer-encoding":
                framed = True
            elif lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                # it names other headers as hop-by-hop: they must be found and dropped
                self.has_connection_header = True
        self.length_known = length
        self.head_done = True
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > 0:
            # the answer came while request bytes still waited to leave: the backend did
            # not read the whole request, and may still be draining it or about to close
            self.answered_early = True
        if self._head_only:
            self.complete = True
        elif not framed and status not in (204, 304):
            self._until_eof = True  # the body ends with the connection
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # end of an interim answer
        self.complete = True
        self._wake()

    # -- the caller's side -------------------------------------------------------------------

    def begin(self, *, head_only: bool = False) -> None:
        """Reset per-request state; `head_only` for HEAD (the answer has no body)."""
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._until_eof = False
        self._chunks.clear()
        self._buffered = 0
        self.error = None
        self.status = 0
        self.reason = ""
        self.headers = []
        self.keep_alive = False
        self.head_done = False
        self.complete = False
        self.length_known = False
        self.has_connection_header = False
        self._timed_out = False
        self.request_sent = False
        self.answered_early = False
        self.answered_any = False  # some byte of the response arrived

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise self.error or UpstreamClosed("backend closed the connection")
        self.transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        if self.closed or self.transport is None:
            raise self.error or UpstreamClosed("backend closed the connection")
        self.transport.writelines(data)

    async def drain(self) -> None:
        """Wait while the backend is not reading what we send."""
        await self._wait_writable(self._loop)
        if self.closed and not self.head_done:
            raise self.error or UpstreamClosed("backend closed the connection")

    async def read_head(self, within: float) -> None:
        """Wait for the response status line and headers; TimeoutError after `within` s.

        A coarse deadline (see lb/http/deadlines.py): far cheaper than asyncio.timeout.
        """
        if self.head_done:
            return
        deadlines = self._deadlines
        timer = None
        if deadlines is not None:
            deadlines.arm(self, within)
        else:
            timer = self._loop.call_later(within, self.expire)
        try:
            while not self.head_done:
                if self.error is not None:
                    raise self.error
                if self._timed_out:
                    raise TimeoutError
                await self._wait()
        finally:
            if timer is not None:
                timer.cancel()
            elif deadlines is not None:
                deadlines.disarm(self)

    def expire(self) -> None:
        """The first-byte deadline passed."""
        self._timed_out = True
        self._wake()
        self._notify()

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    def listen(self, listener: Callable[[], None], within: float) -> None:
        """`read_head()` without a coroutine (the fast path, lb/fastpath.py): `listener` is
        called once, at the end of the read that brought the response head (a small answer
        is then complete too), or when the connection fails or closes, or when `within`
        seconds pass without a head (`timed_out`)."""
        self.listener = listener
        if self._deadlines is not None:
            self._deadlines.arm(self, within)
        else:
            self._timer = self._loop.call_later(within, self.expire)

    def _notify(self) -> None:
        listener = self.listener
        if listener is None:
            return
        self.listener = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        elif self._deadlines is not None:
            self._deadlines.disarm(self)
        listener()

    async def read_chunk(self) -> bytes:
        """The next piece of the response body; b"" at its end."""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                if self._read_paused and self._buffered < LOW_WATER and self.transport:
                    self._read_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait()

    def sent(self, measure: bool) -> None:
        """The request head was just written; `measure`: `backend_latency()` counts from
        here (two clock reads at each end, one a system call: not for every request)."""
        self.measured = measure
        if measure:
            self.sent_at, self.sent_cpu = time.perf_counter(), busy_clock()

    def backend_latency(self) -> float:
        """Seconds the backend took to answer, as the admitter must see it (lb/overload.py).

        The wall time from the request head's write to the response head's arrival, less
        the time this thread spent meanwhile running or waiting for a CPU (`busy_clock`):
        while the event loop is busy with other requests, an answer that has arrived waits
        for its turn, and that wait is the lb's, not the backend's. With the loop saturated
        an iteration lasts 5-40 ms against a backend's 0.2 ms, so the plain wall time took
        the lb's own lag for a slow backend: the adaptive limits fell to their floor and 9
        in 10 requests were shed (docs/load-balancer.md, "Hot path and tail"). Time the
        loop spent blocked, waiting for the socket, was the backend's.
        """
        waited = (self.head_at - self.sent_at) - (self.head_cpu - self.sent_cpu)
        return waited if waited > LATENCY_FLOOR else LATENCY_FLOOR

    def has_body_data(self) -> bool:
        return self.complete or bool(self._chunks)

    def take_body(self) -> bytes:
        """All buffered body bytes at once (for a complete response)."""
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return body

    def reusable(self) -> bool:
        """May this connection carry another request? Only when the request was sent whole
        (its body framed to the end) and the response read whole. A backend that answered
        early is still reading the old body: the next request on the connection, another
        client's, would be parsed as the rest of it (request smuggling)."""
        return (
            self.request_sent
            and not self.answered_early
            and self.complete
            and self.keep_alive
            and not self.closed
            and self.error is None
            and not self._chunks
        )

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    # -- internals ---------------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()


class KeepAlivePool:
    """Idle keep-alive connections to one backend (most recently used first)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int,
        loop: asyncio.AbstractEventLoop,
        idle_ttl: float = IDLE_TTL,
        deadlines: Deadlines | None = None,
    ) -> None:
        self._deadlines = deadlines
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle_ttl = idle_ttl
        self._loop = self.loop = loop
        self._idle: deque[UpstreamConnection] = deque()

    def take_idle(self) -> UpstreamConnection | None:
        """A live idle connection, or None (then `connect()`)."""
        idle = self._idle
        now = self._loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.last_used < self.idle_ttl:
                return conn
            conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection; ConnectFailed when the backend does not accept it."""
        loop = self._loop
        try:
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(loop, self._deadlines), self.host, self.port
            )
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Keep `conn` for the next request if it is clean, else close it."""
        if not conn.reusable() or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.last_used = self._loop.time()
        self._idle.append(conn)
        # the oldest end may hold connections that went stale meanwhile
        first = self._idle[0]
        if first.closed or conn.last_used - first.last_used > self.idle_ttl:
            self._idle.popleft().close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    @property
    def idle(self) -> int:
        return len(self._idle)


class Upstream(Protocol):
    """The proxy's seam to its backends: UpstreamClient, or lb/http/memory.py's twin."""

    def pool(self, name: str, host: str, port: int) -> KeepAlivePool: ...

    def close(self) -> None: ...


class UpstreamClient:
    """A KeepAlivePool per backend name: the proxy's one seam to the network upstream
    (lb/http/memory.py has its in-memory twin)."""

    def __init__(
        self,
        *,
        max_idle: int,
        loop: asyncio.AbstractEventLoop,
        deadlines: Deadlines | None = None,
    ) -> None:
        self._max_idle = max_idle
        self._loop = loop
        self._deadlines = deadlines
        self._pools: dict[str, KeepAlivePool] = {}

    def pool(self, name: str, host: str, port: int) -> KeepAlivePool:
        pool = self._pools.get(name)
        if pool is None:
            pool = KeepAlivePool(
                host, port, max_idle=self._max_idle, loop=self._loop, deadlines=self._deadlines
            )
            self._pools[name] = pool
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
