"""The public listener: an SO_REUSEPORT socket and the server that owns its client connections."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Final

from lb.config import Address
from lb.errors import LbError
from lb.http.connection import ClientConnection, ClientLimits, Take
from lb.http.deadlines import Deadlines
from lb.http.request import Request

Handler = Callable[[Request, ClientConnection], Awaitable[bool]]

log = logging.getLogger("lb.server")

# Connections taken from the accept queue per wake-up. libuv (under uvloop) accepts one
# connection per loop iteration; with the loop saturated an iteration lasts 10-20 ms, so a
# burst of 256 new connections waited up to 2-4 s in the queue: the p99 of a fresh wrk
# run (docs/load-balancer.md, "Hot path and tail"). Each worker has its own SO_REUSEPORT
# socket, so a greedy accept takes nothing from a sibling.
ACCEPT_BATCH: Final = 256
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE: Final = 0.1  # seconds accepting pauses when out of file descriptors


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
        take: Take | None = None,
    ) -> None:
        self.handler = handler
        self.take = take  # the fast path (lb/fastpath.py), tried before `handler`
        self.loop = loop
        self.limits = limits
        self._on_protocol_error = on_protocol_error
        self.connections: set[ClientConnection] = set()
        self.deadlines = deadlines or Deadlines(loop)
        self.draining = False
        self._sock: socket.socket | None = None
        self._accepting = False
        self._pending: set[asyncio.Task[object]] = set()  # transports being set up

    def on_protocol_error(self, error: LbError) -> None:
        self._on_protocol_error(error)

    def request_id(self) -> str:
        """An id for an answer written before any request was parsed (a protocol error)."""
        return os.urandom(16).hex()

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    async def start(self, sock: socket.socket) -> None:
        """Accept connections on `sock` (already listening, non-blocking) from now on."""
        sock.setblocking(False)
        self._sock = sock
        self._accepting = True
        self.loop.add_reader(sock.fileno(), self._accept)

    def stop_accepting(self) -> None:
        self.draining = True
        if self._sock is not None and self._accepting:
            self._accepting = False
            self.loop.remove_reader(self._sock.fileno())
        if self._sock is not None:
            self._sock.close()  # this process's copy: the master keeps the slot's socket
            self._sock = None

    def _accept(self) -> None:
        """Take up to ACCEPT_BATCH connections from the accept queue, each a ClientConnection."""
        sock = self._sock
        for _ in range(ACCEPT_BATCH):
            if sock is None or not self._accepting:
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                # out of descriptors: the queue keeps the clients; try again shortly
                log.error("accept failed (%s): pausing accepts for %gs", exc, ACCEPT_PAUSE)
                self._accepting = False
                self.loop.remove_reader(sock.fileno())
                self.loop.call_later(ACCEPT_PAUSE, self._resume_accepting)
                return
            self._adopt(conn)

    def _resume_accepting(self) -> None:
        if self._sock is not None and not self._accepting and not self.draining:
            self._accepting = True
            self.loop.add_reader(self._sock.fileno(), self._accept)

    def _adopt(self, conn: socket.socket) -> None:
        """Hand an accepted socket to the event loop as a transport with a ClientConnection."""
        conn.setblocking(False)
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self.loop.create_task(self.loop.connect_accepted_socket(self, conn))
        self._pending.add(task)
        task.add_done_callback(lambda done: self._adopted(done, conn))

    def _adopted(self, task: asyncio.Task[object], conn: socket.socket) -> None:
        self._pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            conn.close()  # e.g. reset by the client before the transport was set up

    def close_idle(self) -> None:
        """Close every connection not in the middle of a request."""
        for conn in list(self.connections):
            conn.close_if_idle()

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()
