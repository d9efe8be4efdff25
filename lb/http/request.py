"""One client request as the proxy sees it: the parsed head and a streamed, flow-controlled body."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from lb.http.flow import HIGH_WATER, LOW_WATER

# the headers the proxy looks at, by lower-case name
WANTED: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-request-id",
        b"expect",
        b"upgrade",
        b"idempotency-key",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"accept",  # the lb's own error answers: a page for browsers, JSON for the rest
    }
)


PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close"})

# list-valued headers: repeated lines are one comma-separated list, in order (RFC 9110 5.3)
LISTS: Final = frozenset({b"x-forwarded-for", b"connection", b"accept"})


class BodyError(Exception):
    """The request body could not be read: the client went away or sent garbage."""


class Body:
    """The request body, fed by the connection and read by the proxy chunk by chunk."""

    __slots__ = ("_buffered", "_chunks", "_error", "_loop", "_pause", "_resume", "_waiter", "eof")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._pause = pause
        self._resume = resume
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BodyError | None = None
        self.eof = False

    # -- the connection's side ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._pause()
        self._wake()

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def fail(self, error: BodyError) -> None:
        if not self.eof:
            self._error = error
        self._wake()

    # -- the proxy's side --------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """All of the body has been read."""
        return self.eof and not self._chunks

    async def read(self) -> bytes:
        """The next chunk; b"" at the end of the body."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < LOW_WATER:
                    self._resume()  # a no-op unless reading was paused
                return chunk
            if self.eof:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read_all(self, limit: int) -> bytes:
        parts = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise BodyError("body larger than announced")
            parts.append(chunk)
        return b"".join(parts)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Request:
    """A parsed request head, its body, and the client connection it arrived on."""

    __slots__ = (
        "body",
        "chunked",
        "content_length",
        "header_bytes",
        "headers",
        "keep_alive",
        "method",
        "peer",
        "raw_headers",
        "target",
        "tunnel_data",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        *,
        method: str,
        target: str,
        version: str,
        raw_headers: list[tuple[bytes, bytes]],
        headers: dict[bytes, bytes],
        header_bytes: int,
        keep_alive: bool,
        upgrade: bool,
        peer: str,
        body: Body | None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.raw_headers = raw_headers
        self.headers = headers  # the WANTED ones, lower-case names; the last one wins
        self.header_bytes = header_bytes
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.peer = peer
        self.body = body
        self.tunnel_data = b""
        length = headers.get(b"content-length")
        self.content_length = int(length) if length is not None else None
        self.chunked = body is not None and self.content_length is None

    def header(self, lower_name: bytes) -> str | None:
        value = self.headers.get(lower_name)
        return None if value is None else value.decode("latin-1")

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]
