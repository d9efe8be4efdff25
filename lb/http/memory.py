"""An in-memory upstream: the twin of `UpstreamClient` (as httpx's MockTransport is to its
transports), so the proxy's retries, budget, breaker and ejection run in-process in tests.

Each backend is a handler: it gets the parsed request and returns a `Reply` — raw response
bytes (anything, well-formed or not), then keep the connection, close it, reset it, or
never answer. The response is parsed by the real `UpstreamConnection`; only the socket is
replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

from lb.http.upstream import ConnectFailed, KeepAlivePool, UpstreamConnection


@dataclass(frozen=True, slots=True)
class MemoryRequest:
    """A request as the in-memory backend received it."""

    backend: str
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """What the in-memory backend does: send `data`, then `then` the connection
    ("keep", "close", "reset" before sending anything, or "hang": never answer)."""

    data: bytes = b""
    then: str = "keep"


def respond(status: int = 200, body: bytes = b"{}", headers: tuple[str, ...] = ()) -> Reply:
    """A well-formed HTTP/1.1 answer with Content-Length."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *headers]
    lines.append(f"Content-Length: {len(body)}")
    return Reply(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


Handler = Callable[[MemoryRequest], Reply]


@dataclass
class MemoryBackend:
    """One in-memory backend: its handler, whether it accepts connections, what it got."""

    handler: Handler
    refuse: bool = False  # connect fails (as a stopped replica)
    requests: list[MemoryRequest] = field(default_factory=list)
    connections: int = 0


class _Transport(asyncio.Transport):
    """The socket between one UpstreamConnection and its in-memory backend."""

    def __init__(self, conn: UpstreamConnection, name: str, backend: MemoryBackend) -> None:
        super().__init__()
        self._conn, self._name, self._backend = conn, name, backend
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = b""

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        request = MemoryRequest(
            self._name,
            self._parser.get_method().decode(),
            self._url.decode("latin-1"),
            self._headers,
            self._body,
        )
        self._backend.requests.append(request)
        reply = self._backend.handler(request)
        self._loop.call_soon(self._deliver, reply)

    def _deliver(self, reply: Reply) -> None:
        if self._closing:
            return
        if reply.then == "reset":
            self._lost(ConnectionResetError("reset by the in-memory backend"))
            return
        if reply.data:
            self._conn.data_received(reply.data)
        if reply.then == "close":
            self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._conn.connection_lost, exc)

    # asyncio.Transport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._parser.feed_data(bytes(data))

    def writelines(self, data: Any) -> None:
        for piece in data:
            self.write(piece)

    def close(self) -> None:
        self._lost(None)

    def abort(self) -> None:
        self._lost(None)

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class MemoryPool(KeepAlivePool):
    """A KeepAlivePool whose connections go to an in-memory backend."""

    def __init__(self, name: str, backend: MemoryBackend, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name, 0, max_idle=8, loop=loop)
        self._name, self._backend = name, backend

    async def connect(self) -> UpstreamConnection:
        if self._backend.refuse:
            raise ConnectFailed(f"cannot connect to {self._name}: refused (in memory)")
        conn = UpstreamConnection(self._loop)
        self._backend.connections += 1
        conn.connection_made(_Transport(conn, self._name, self._backend))
        return conn


class MemoryUpstream:
    """The in-memory twin of UpstreamClient: backends by name ("host:port")."""

    def __init__(self, backends: dict[str, MemoryBackend]) -> None:
        self.backends = backends
        self._pools: dict[str, MemoryPool] = {}

    def pool(self, name: str, host: str, port: int) -> KeepAlivePool:
        pool = self._pools.get(name)
        if pool is None:
            loop = asyncio.get_running_loop()
            pool = self._pools[name] = MemoryPool(name, self.backends[name], loop)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
