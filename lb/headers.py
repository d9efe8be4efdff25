"""Header rules of a proxy (pure): hop-by-hop stripping, forwarding headers, request ids."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Final

from multidict import CIMultiDict

from lb.identity import Client

RawHeaders = Sequence[tuple[bytes, bytes]]

X_REQUEST_ID: Final = "X-Request-ID"
X_FORWARDED_FOR: Final = "X-Forwarded-For"
X_FORWARDED_PROTO: Final = "X-Forwarded-Proto"
X_REAL_IP: Final = "X-Real-IP"
IDEMPOTENCY_KEY: Final = "Idempotency-Key"

# RFC 9110 7.6.1 plus the historical ones every proxy strips.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the lb itself on the way up: whatever the client sent is dropped.
SET_UPSTREAM: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-real-ip",
        b"x-request-id",
        b"content-length",
        b"expect",  # the lb answers 100-continue itself
    }
)
# Set by the lb itself on the way down: a backend's echo of the request id would repeat it.
SET_DOWNSTREAM: Final = frozenset({b"x-request-id"})
_DROP_UP: Final = HOP_BY_HOP | SET_UPSTREAM
_DROP_DOWN: Final = HOP_BY_HOP | SET_DOWNSTREAM

_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")


def connection_tokens(raw: RawHeaders) -> frozenset[bytes]:
    """Header names listed in `Connection` (they are hop-by-hop too), lower-cased."""
    tokens: set[bytes] = set()
    for name, value in raw:
        if len(name) == 10 and name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"close")
    tokens.discard(b"keep-alive")
    return frozenset(tokens)


def request_id(sent: str | None, rng: random.Random) -> str:
    """The client's X-Request-ID when well-formed (1-128 safe characters), else a new one."""
    if sent and _REQUEST_ID.fullmatch(sent):
        return sent
    return f"{rng.getrandbits(128):032x}"


def forwarded_for(peer: str, incoming: str | None, via_trusted_proxy: bool) -> str:
    """X-Forwarded-For to send: a trusted proxy's chain extended by the peer, else the peer."""
    if via_trusted_proxy and incoming:
        return f"{incoming}, {peer}"
    return peer


def forwarded_proto(incoming: str | None, via_trusted_proxy: bool) -> str:
    """X-Forwarded-Proto: believed only from a trusted proxy; the public listener is http."""
    if via_trusted_proxy and incoming and incoming.lower() in ("http", "https"):
        return incoming.lower()
    return "http"


def forwarding(
    peer: str, incoming_for: str | None, incoming_proto: str | None, who: Client, rid: str
) -> tuple[tuple[str, str], ...]:
    """The headers the lb sets on the way up (whatever the client sent is dropped)."""
    return (
        (X_FORWARDED_FOR, forwarded_for(peer, incoming_for, who.via_trusted_proxy)),
        (X_FORWARDED_PROTO, forwarded_proto(incoming_proto, who.via_trusted_proxy)),
        (X_REAL_IP, who.ip),
        (X_REQUEST_ID, rid),
    )


def upstream_head(
    method: str,
    target: str,
    raw: RawHeaders,
    *,
    extra: Iterable[tuple[str, str]],
    content_length: int | None,
    chunked: bool,
    default_host: str,
    keep_upgrade: bool = False,
    scan_connection: bool = True,
) -> bytes:
    """The request head to send to a backend: the client's end-to-end headers, then ours.

    `scan_connection=False` says the caller knows there is no Connection header.
    """
    named = connection_tokens(raw) if scan_connection else None
    drop = _DROP_UP | named if named else _DROP_UP
    parts = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
    has_host = False
    for name, value in raw:
        lname = name.lower()
        if lname in drop:
            if keep_upgrade and lname in (b"upgrade", b"connection"):
                parts += (name, b": ", value, b"\r\n")
            continue
        if lname == b"host":
            has_host = True
        parts += (name, b": ", value, b"\r\n")
    if not has_host:
        parts.append(f"Host: {default_host}\r\n".encode("latin-1"))
    for key, text in extra:
        parts.append(f"{key}: {text}\r\n".encode("latin-1"))
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None and (content_length > 0 or method not in _NO_BODY):
        parts.append(b"Content-Length: %d\r\n" % content_length)
    parts.append(b"\r\n")
    return b"".join(parts)


_NO_BODY: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


def downstream_headers(raw: RawHeaders) -> CIMultiDict[str]:
    """A backend's response headers minus hop-by-hop ones, for the client."""
    named = connection_tokens(raw)
    drop = _DROP_DOWN | named if named else _DROP_DOWN
    return CIMultiDict(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in raw
        if name.lower() not in drop
    )


def raw_header_bytes(raw: RawHeaders) -> int:
    """The size of a header block as sent (name, ": ", value, CRLF per line)."""
    return sum(len(name) + len(value) + 4 for name, value in raw)


def response_head(
    status: int,
    reason: str,
    raw: RawHeaders,
    extra: Iterable[tuple[str, str]],
    *,
    http11: bool,
    framing: str,
    keep_alive: bool,
    scan_connection: bool = True,
) -> bytes:
    """The response head for the client: the backend's end-to-end headers, then ours.

    framing: "length" (the backend's Content-Length stands), "chunked" (we chunk), "close"
    (the body ends with the connection) or "none" (no body: HEAD, 204, 304).
    """
    named = connection_tokens(raw) if scan_connection else None
    drop = _DROP_DOWN | named if named else _DROP_DOWN
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, (reason or _phrase(status)).encode("latin-1"))]
    for name, value in raw:
        if name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    for key, text in extra:
        parts.append(f"{key}: {text}\r\n".encode("latin-1"))
    if framing == "chunked":
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif not http11:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
