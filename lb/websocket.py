"""WebSocket upgrades: accept the client's socket, open one to a backend, relay messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web

from lb.errors import BadGateway, NoBackend
from lb.upstream.backend import Outcome
from lb.upstream.pool import Pool

log = logging.getLogger("lb.websocket")

# client headers worth passing to the backend's handshake
FORWARD: Final = ("Cookie", "Authorization", "Origin", "User-Agent", "Accept-Language")


class WebSocketProxy:
    """Relays a WebSocket session through a backend picked by the pool (no retries)."""

    def __init__(self, pool: Pool, *, connect_timeout: float, idle_timeout: float) -> None:
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def relay(
        self,
        request: web.BaseRequest,
        upstream_extra: tuple[tuple[str, str], ...],
        answer_headers: tuple[tuple[str, str], ...],
    ) -> tuple[web.StreamResponse, str]:
        backend = self.pool.pick()
        if backend is None:
            raise NoBackend()
        headers = {name: request.headers[name] for name in FORWARD if name in request.headers}
        headers.update(upstream_extra)
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        url = f"{backend.url.url}{request.raw_path}"
        try:
            upstream = await self._client().ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.connect_timeout),
                autoping=False,
                max_msg_size=0,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reached = not isinstance(exc, aiohttp.ClientConnectorError)
            self.pool.finish(backend, Outcome.RESET if reached else Outcome.CONNECT_FAILURE)
            raise BadGateway(f"WebSocket handshake with the backend failed: {exc}") from None
        downstream = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoping=False,
            max_msg_size=0,
        )
        for name, value in answer_headers:
            downstream.headers[name] = value
        outcome = Outcome.OK
        try:
            await downstream.prepare(request)
            await _pump_both(downstream, upstream)
        except (ConnectionError, aiohttp.ClientError):
            outcome = Outcome.CANCELLED
        finally:
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await downstream.close()
            self.pool.finish(backend, outcome)
        return downstream, backend.name


async def _pump_both(
    client: web.WebSocketResponse, backend: aiohttp.ClientWebSocketResponse
) -> None:
    async def client_to_backend() -> None:
        async for msg in client:
            await _forward(msg, backend)

    async def backend_to_client() -> None:
        async for msg in backend:
            await _forward(msg, client)

    tasks = [asyncio.ensure_future(client_to_backend()), asyncio.ensure_future(backend_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _forward(
    msg: aiohttp.WSMessage, to: web.WebSocketResponse | aiohttp.ClientWebSocketResponse
) -> None:
    if msg.type == WSMsgType.TEXT:
        await to.send_str(msg.data)
    elif msg.type == WSMsgType.BINARY:
        await to.send_bytes(msg.data)
    elif msg.type == WSMsgType.PING:
        await to.ping(msg.data)
    elif msg.type == WSMsgType.PONG:
        await to.pong(msg.data)
