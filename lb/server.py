"""The public listener: an SO_REUSEPORT socket and the server that owns its client connections."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

from lb.config import Address
from lb.errors import LbError
from lb.http.connection import ClientConnection, ClientLimits
from lb.http.deadlines import Deadlines
from lb.http.request import Request

Handler = Callable[[Request, ClientConnection], Awaitable[bool]]


def listen_socket(
    address: Address, *, reuse_port: bool = True, backlog: int = 2048
) -> socket.socket:
    """A listening TCP socket; with SO_REUSEPORT several processes share the port."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address.host, address.port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class Server:
    """Makes a ClientConnection per accepted socket and can close them all gracefully."""

    def __init__(
        self,
        handler: Handler,
        limits: ClientLimits,
        *,
        loop: asyncio.AbstractEventLoop,
        on_protocol_error: Callable[[LbError], None] = lambda error: None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.handler = handler
        self.loop = loop
        self.limits = limits
        self._on_protocol_error = on_protocol_error
        self.connections: set[ClientConnection] = set()
        self.deadlines = deadlines or Deadlines(loop)
        self.draining = False
        self._listener: asyncio.Server | None = None

    def on_protocol_error(self, error: LbError) -> None:
        self._on_protocol_error(error)

    def request_id(self) -> str:
        """An id for an answer written before any request was parsed (a protocol error)."""
        return os.urandom(16).hex()

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    async def start(self, sock: socket.socket) -> None:
        self._listener = await self.loop.create_server(self, sock=sock, backlog=2048)

    def stop_accepting(self) -> None:
        self.draining = True
        if self._listener is not None:
            self._listener.close()

    def close_idle(self) -> None:
        """Close every connection not in the middle of a request."""
        for conn in list(self.connections):
            conn.close_if_idle()

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()
