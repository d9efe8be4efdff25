"""Upgraded connections (WebSocket): after the backend's 101, bytes flow both ways untouched."""

from __future__ import annotations

import asyncio

from lb.http.connection import ClientConnection
from lb.http.upstream import UpstreamConnection


async def splice(
    client: ClientConnection, upstream: UpstreamConnection, client_tail: bytes
) -> None:
    """Relay raw bytes between the two connections until either side closes.

    Back-pressure: when one side's send buffer fills, reading from the other pauses.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    client_t, upstream_t = client.transport, upstream.transport
    if client_t is None or upstream_t is None or client.closed or upstream.closed:
        return

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def to_upstream(data: bytes) -> None:
        if not upstream_t.is_closing():
            upstream_t.write(data)
            if upstream_t.get_write_buffer_size() > 1 << 20:
                client_t.pause_reading()
                loop.call_later(0.01, _resume_when_drained, upstream_t, client_t)

    def to_client(data: bytes) -> None:
        if not client_t.is_closing():
            client_t.write(data)
            if client_t.get_write_buffer_size() > 1 << 20:
                upstream_t.pause_reading()
                loop.call_later(0.01, _resume_when_drained, client_t, upstream_t)

    def client_gone() -> None:
        upstream.close()
        finished()

    def upstream_gone() -> None:
        client.close()
        finished()

    client.tunnel, client.tunnel_closed = to_upstream, client_gone
    upstream.tunnel, upstream.tunnel_closed = to_client, upstream_gone
    if upstream.tunnel_tail:
        to_client(upstream.tunnel_tail)
    if client_tail:
        to_upstream(client_tail)
    client.resume_reading()
    try:
        await done
    finally:
        client.tunnel = upstream.tunnel = None
        client.tunnel_closed = upstream.tunnel_closed = None


def _resume_when_drained(full: asyncio.Transport, paused: asyncio.Transport) -> None:
    if full.is_closing() or full.get_write_buffer_size() < 1 << 18:
        if not paused.is_closing():
            paused.resume_reading()
        return
    asyncio.get_running_loop().call_later(0.01, _resume_when_drained, full, paused)
