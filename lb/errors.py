"""The lb's own error answers: a small hierarchy with stable codes, and their one builder."""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus

from aiohttp import web

Headers = Iterable[tuple[str, str]]

NO_BACKEND_RETRY_AFTER = 1  # seconds: health checks run every couple of seconds


class LbError(Exception):
    """An answer the lb writes itself instead of a backend's: `{"detail", "code"}` JSON."""

    status: int = 500
    code: str = "internal_error"
    default_detail: str = "The load balancer failed to handle the request."

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Headers = (),
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = tuple(headers)
        super().__init__(self.detail)


class BadRequest(LbError):
    status, code = 400, "bad_request"
    default_detail = "Malformed HTTP request."


class RequestTimeout(LbError):
    status, code = 408, "request_timeout"
    default_detail = "The request body stalled longer than LB_IDLE_TIMEOUT."


class BodyTooLarge(LbError):
    status, code = 413, "body_too_large"
    default_detail = "The request body is larger than the lb accepts."


class HeadersTooLarge(LbError):
    status, code = 431, "headers_too_large"
    default_detail = "The request headers are larger than the lb accepts."


class BadGateway(LbError):
    status, code = 502, "bad_gateway"
    default_detail = "The backend failed to answer and the request could not be retried."


class NoBackend(LbError):
    status, code = 503, "no_backend"
    default_detail = "No healthy backend can take the request; retry shortly."

    def __init__(self, detail: str | None = None, *, headers: Headers = ()) -> None:
        super().__init__(
            detail, headers=(("Retry-After", str(NO_BACKEND_RETRY_AFTER)), *tuple(headers))
        )


class Overloaded(LbError):
    """Every eligible backend is at its concurrency limit and the bounded wait ran out."""

    status, code = 503, "overloaded"
    default_detail = "The service is at capacity; retry after the time in Retry-After."

    def __init__(
        self, detail: str | None = None, *, retry_after: int = 1, headers: Headers = ()
    ) -> None:
        super().__init__(detail, headers=(("Retry-After", str(retry_after)), *tuple(headers)))


class GatewayTimeout(LbError):
    status, code = 504, "gateway_timeout"
    default_detail = "The backend did not answer in time."


def error_body(code: str, detail: str) -> bytes:
    return json.dumps({"detail": detail, "code": code}).encode()


def json_error(
    status: int, code: str, detail: str, headers: Headers = (), *, close: bool = False
) -> web.Response:
    """The one builder of the lb's error responses."""
    resp = web.Response(
        status=status, body=error_body(code, detail), content_type="application/json"
    )
    for name, value in headers:
        resp.headers[name] = value
    if close:
        resp.force_close()
    return resp


def render_error(
    error: LbError, headers: Headers = (), *, close: bool = False, head_only: bool = False
) -> bytes:
    """The same answer as raw HTTP/1.1 bytes, for the public listener's own server."""
    body = error_body(error.code, error.detail)
    lines = [
        f"HTTP/1.1 {error.status} {_reason(error.status)}\r\n",
        "Content-Type: application/json\r\n",
        f"Content-Length: {len(body)}\r\n",
    ]
    lines += [f"{name}: {value}\r\n" for name, value in (*error.headers, *headers)]
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + body


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
