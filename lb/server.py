"""The public listener: an SO_REUSEPORT socket served by aiohttp's low-level HTTP server, with
JSON answers for malformed or oversized requests and a header-read deadline (slowloris)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from lb.config import Address, Settings
from lb.errors import json_error

log = logging.getLogger("lb.server")


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


ErrorHook = Callable[[int, str], None]


class LbRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering protocol errors in the lb's JSON form."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        resp = self._error_response(request, status, exc, message)
        manager = self._manager
        if isinstance(manager, LbServer) and manager.on_error is not None:
            manager.on_error(resp.status, _CODES.get(resp.status, "internal_error"))
        return resp

    def _error_response(
        self,
        request: web.BaseRequest,
        status: int,
        exc: BaseException | None,
        message: str | None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)
        ):
            log.debug("oversized request head from %s: %s", request.remote, exc)
            return json_error(
                431,
                "headers_too_large",
                "A request header line or the header count exceeds the lb's limits.",
                close=True,
            )
        if status == 400:
            log.debug("malformed request from %s: %s", request.remote, exc)
            detail = f"Malformed HTTP request: {getattr(exc, 'message', None) or message or exc}"
            return json_error(400, "bad_request", detail, close=True)
        log.error("error handling request from %s", request.remote, exc_info=exc)
        if status == 504:
            return json_error(504, "gateway_timeout", "The request timed out.", close=True)
        return json_error(
            500, "internal_error", "The load balancer failed to handle the request.", close=True
        )


_CODES = {400: "bad_request", 431: "headers_too_large", 504: "gateway_timeout"}


class LbServer(web_server.Server):
    """aiohttp's low-level server, making LbRequestHandler connections."""

    on_error: ErrorHook | None = None  # counts the protocol-level error answers

    def __call__(self) -> web_protocol.RequestHandler:
        return LbRequestHandler(self, loop=self._loop, **self._kwargs)


def make_server(handler: Any, settings: Settings) -> LbServer:
    """The protocol factory for the public socket.

    `keepalive_timeout` doubles as the header-read deadline: aiohttp closes a connection
    whose next request head has not fully arrived that long after it opened or after the
    previous response, so a slowloris client is cut off at LB_HEADER_TIMEOUT.
    """
    limit = settings.max_header_bytes
    return LbServer(
        handler,
        keepalive_timeout=settings.header_timeout,
        max_line_size=limit,
        max_field_size=limit,
        max_headers=max(32, limit // 64),
        access_log=None,
        lingering_time=1.0,
        auto_decompress=False,
    )


async def serve(server: LbServer, sock: socket.socket) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(server, sock=sock, backlog=2048)
