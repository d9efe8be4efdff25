"""A lean HTTP/1.1 client for load generation: keep-alive connections to one address,
httptools parsing, no per-request objects beyond the answer.

aiohttp's client spends a few hundred microseconds of CPU a request; at ten times the stack's
capacity an open-loop generator built on it needs more than a core of this 2-core machine,
falls behind its schedule, and measures its own lag as the server's latency. This one spends
a few tens. It knows exactly what the benches need: one host, a method, a path, headers and
an optional body; Content-Length or chunked answers; a total timeout per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import httptools


class ClientError(Exception):
    """The request got no whole answer (connection refused, reset or closed early)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; the last one wins
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_only = False
        self.answered_any = False  # a byte of the current answer arrived

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ClientError(f"bad answer: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ClientError("the connection closed before the answer was whole"))

    # httptools
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            self._done()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._head_only:
            self._done()

    # the client's side
    def send(self, data: bytes, head_only: bool) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._headers, self._body, self._head_only = {}, [], head_only
        self.answered_any = False
        self._waiter = waiter = self.loop.create_future()
        self.transport.write(data)
        return waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _done(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result(Answer(status, self._headers, b"".join(self._body)))

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class RawClient:
    """Keep-alive connections to `host:port`, as many as requests in flight."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[_Connection] = []
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        """One request; ClientError or TimeoutError when no whole answer came."""
        lines = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        data = b"".join(lines)
        async with asyncio.timeout(self.timeout):
            conn, reused = await self._connection()
            try:
                answer = await conn.send(data, head_only=method == "HEAD")
            except ClientError:
                conn.abort()
                if not reused or conn.answered_any:
                    raise
                # a kept-alive connection the server had closed: once more, on a new one
                conn, _ = await self._connection()
                answer = await conn.send(data, head_only=method == "HEAD")
            except BaseException:
                conn.abort()
                raise
        if conn.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn.abort()
        return answer

    async def _connection(self) -> tuple[_Connection, bool]:
        """A connection, and whether it is a kept-alive one."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Connection(loop), self.host, self.port)
        except OSError as exc:
            raise ClientError(f"cannot connect: {exc}") from None
        return conn, False

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().abort()
