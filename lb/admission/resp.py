"""A lean pipelined RESP connection to one Redis server: bytes out, hiredis-parsed replies in.

The limiter sends one pre-encoded batch of EVALSHA commands per event-loop iteration;
a general client's per-command packing and parsing would cost more than the round trip
it saves. Replies come back in order, so a FIFO of waiting batches is all the state.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis


class RespError(Exception):
    """The connection failed, closed, or a command was refused."""


def encode(*parts: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Batch:
    __slots__ = ("expected", "future", "replies")

    def __init__(self, expected: int, future: asyncio.Future[list[Any]]) -> None:
        self.expected = expected
        self.future = future
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[], None]) -> None:
        self.on_lost = on_lost
        self.last_read = 0.0  # monotonic time of the last bytes from the server
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[_Batch] = collections.deque()
        self.closed: RespError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        self.reader.feed(data)
        waiting = self.waiting
        while waiting:
            reply = self.reader.gets()
            if reply is False:
                return
            batch = waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                waiting.popleft()
                if not batch.future.done():  # its caller may have given up
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = RespError(f"connection lost: {exc or 'closed by the server'}")
        while self.waiting:
            batch = self.waiting.popleft()
            if not batch.future.done():
                batch.future.set_exception(self.closed)
        self.on_lost()


class RespConnection:
    """One connection from a `redis://`, `rediss://` or `unix://` URL (password, db honoured)."""

    def __init__(self, url: str, *, on_lost: Callable[[], None] = lambda: None) -> None:
        self._on_lost = on_lost
        parts = urlsplit(url)
        self._scheme = parts.scheme
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._path = parts.path
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        self._db = int(db) if db.isdigit() else 0
        self._protocol: _Protocol | None = None

    @property
    def last_read(self) -> float:
        """When the server last sent anything (monotonic seconds; 0 if never)."""
        return 0.0 if self._protocol is None else self._protocol.last_read

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.closed is None

    async def connect(self) -> None:
        self.abort()
        loop = asyncio.get_running_loop()

        def make() -> _Protocol:
            return _Protocol(on_lost)

        def on_lost() -> None:
            # a connection dropped on purpose (abort) is no news; one Redis dropped is
            if self._protocol is protocol:
                self._protocol = None
                self._on_lost()

        if self._scheme == "unix":
            _, protocol = await loop.create_unix_connection(make, self._path)
        else:
            context = ssl.create_default_context() if self._scheme == "rediss" else None
            _, protocol = await loop.create_connection(make, self._host, self._port, ssl=context)
        self._protocol = protocol
        hello: list[bytes] = []
        if self._password is not None:
            auth = (b"AUTH",) if self._username is None else (b"AUTH", self._username.encode())
            hello.append(encode(*auth, self._password.encode()))
        if self._db:
            hello.append(encode(b"SELECT", str(self._db).encode()))
        if hello:
            for reply in await self.send(b"".join(hello), len(hello)):
                if isinstance(reply, Exception):
                    self.abort()
                    raise RespError(f"connection setup refused: {reply}")

    async def send(self, payload: bytes, replies: int) -> list[Any]:
        """Write pre-encoded commands; return their `replies` replies (errors as exceptions)."""
        protocol = self._protocol
        if protocol is None or protocol.closed is not None or protocol.transport is None:
            raise RespError("not connected")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(_Batch(replies, future))
        protocol.transport.write(payload)
        return await future

    def abort(self) -> None:
        """Drop the connection at once (a timed-out connection may deliver stale replies)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()
        self._protocol = None

    async def close(self) -> None:
        self.abort()
