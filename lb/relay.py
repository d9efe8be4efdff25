"""Relaying a backend's answer to the client: framing, streaming with back-pressure, tunnels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from lb import headers as h
from lb.headers import SET_DOWNSTREAM
from lb.http.connection import ClientConnection
from lb.http.pump import Stalled, pump
from lb.http.request import Request
from lb.http.upstream import UpstreamConnection, UpstreamError
from lb.upstream.backend import Outcome
from lb.websocket import splice

NO_BODY_STATUSES: Final = frozenset({204, 304})
Headers = tuple[tuple[str, str], ...]


def framing(method: str, status: int, length_known: bool, http11: bool) -> str:
    """How the body reaches the client: "none" (HEAD, 1xx, 204, 304), "length" (the
    backend's Content-Length), "chunked" (we chunk it), or "close" (HTTP/1.0: the body
    ends with the connection)."""
    if method == "HEAD" or status in NO_BODY_STATUSES or status < 200:
        return "none"
    if length_known:
        return "length"
    return "chunked" if http11 else "close"


async def relay(
    request: Request,
    client: ClientConnection,
    conn: UpstreamConnection,
    answer_headers: Headers,
    *,
    idle_timeout: float,
    draining: bool,
    tee: Callable[[bytes], None] | None = None,
) -> tuple[Outcome | None, bool]:
    """Send the backend's response (head received) to the client.

    Returns the failure that cut it short (None: it went through) and whether the client
    connection may carry another request. A response cut short drops the client
    connection, so the client sees a truncated answer, not a complete-looking wrong one.
    `tee` gets every body piece as it goes out (the cache's capture).
    """
    head, how, keep = answer_head(request, conn, answer_headers, draining)
    chunked = how == "chunked"
    try:
        if conn.complete:
            # the whole answer is here: head and body leave in one write
            send_whole(client, conn, head, chunked, tee)
            return None, keep
        client.write(head)
        read = conn.read_chunk
        if tee is not None:  # the micro-cache keeps a copy of the body as it streams
            upstream_read = read

            async def read() -> bytes:
                chunk = await upstream_read()
                if chunk:
                    tee(chunk)
                return chunk

        await pump(read, client.write, client.drain, chunked=chunked, idle_timeout=idle_timeout)
        return None, keep
    except Stalled as stalled:
        client.abort()
        # a silent backend is its failure; a client that stopped reading is the client's
        return (Outcome.TIMEOUT if stalled.reading else Outcome.CANCELLED), False
    except UpstreamError:
        client.abort()
        return Outcome.RESET, False
    except ConnectionError:
        if not conn.complete:
            conn.abort()
        return Outcome.CANCELLED, False  # the client went away


def answer_head(
    request: Request, conn: UpstreamConnection, answer_headers: Headers, draining: bool
) -> tuple[bytes, str, bool]:
    """The response head for the client, its framing (see `framing`), and whether the
    client connection may carry another request."""
    http11 = request.version == "1.1"
    how = framing(request.method, conn.status, conn.length_known, http11)
    keep = request.keep_alive and not draining and how != "close"
    head = h.response_head(
        conn.status,
        conn.reason,
        conn.headers,
        answer_headers,
        http11=http11,
        framing=how,
        keep_alive=keep,
        scan_connection=conn.has_connection_header,
    )
    return head, how, keep


def send_whole(
    client: ClientConnection,
    conn: UpstreamConnection,
    head: bytes,
    chunked: bool,
    tee: Callable[[bytes], None] | None = None,
) -> None:
    """A complete answer in one write: head and body (ConnectionError: the client is gone)."""
    data = conn.take_body()
    if tee is not None:
        tee(data)
    if chunked:
        data = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)) if data else b"0\r\n\r\n"
    client.write(head + data)


async def tunnel(
    request: Request, client: ClientConnection, conn: UpstreamConnection, answer_headers: Headers
) -> Outcome:
    """A 101 from the backend: pass its head on, then splice the two sockets until either
    side closes."""
    parts = [b"HTTP/1.1 101 %s\r\n" % (conn.reason or "Switching Protocols").encode()]
    parts += [b"%s: %s\r\n" % (k, v) for k, v in conn.headers if k.lower() not in SET_DOWNSTREAM]
    parts += [f"{k}: {v}\r\n".encode("latin-1") for k, v in answer_headers[:1]]
    parts.append(b"\r\n")
    try:
        client.write(b"".join(parts))
        await splice(client, conn, request.tunnel_data)
    except ConnectionError:
        return Outcome.CANCELLED
    finally:
        conn.abort()
    return Outcome.OK
