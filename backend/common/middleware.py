"""Request middleware: request id + access log + metrics, JSON bodies on every API error,
Secure cookies over TLS, and the body size limit."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from backend import metrics
from backend.common.logs import REQUEST_ID

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("backend.access")

Handler = Callable[[HttpRequest], HttpResponse]

ERROR_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    500: "server_error",
    503: "unavailable",
}


class RequestLogMiddleware:
    """Keeps the lb's X-Request-ID (or makes one), echoes it, logs one line, counts metrics."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            elapsed = time.perf_counter() - started
            response[REQUEST_ID_HEADER] = request_id
            method = request.method if request.method in _KNOWN_METHODS else "OTHER"
            metrics.HTTP_REQUESTS.labels(method=method, status=str(response.status_code)).inc()
            metrics.HTTP_DURATION.labels(method=method).observe(elapsed)
            access_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            return response
        finally:
            REQUEST_ID.reset(token)


_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _is_json(response: HttpResponse) -> bool:
    return "json" in response.get("Content-Type", "")


def came_through_lb(request: HttpRequest) -> bool:
    """The lb proxies every public request and always sets X-Forwarded-For; the operator's
    direct requests to a replica (and its health checks) carry none."""
    return "HTTP_X_FORWARDED_FOR" in request.META


# the statuses Django answers with its technical (debug) pages when DEBUG is on
_TECHNICAL_STATUSES = frozenset({400, 404, 500})


class JsonErrorMiddleware:
    """Turns any non-JSON error response outside the admin into `{"detail", "code"}`.

    The DRF exception handler and the handler4xx/500 views already answer JSON; this catches
    the rest (Django's CSRF page, debug pages, middleware-level rejections). The admin keeps
    its own HTML pages, except Django's technical 400/404/500 pages under DEBUG: those show
    settings, URL patterns and tracebacks, and never leave through the public lb.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or _is_json(response)
            # the web site's own error pages (backend/site: not found, declined card, ...)
            or getattr(response, "site_page", False)
            or getattr(response, "streaming", False)
        ):
            return response
        if request.path.startswith("/admin/") and not self._technical_page_to_public(
            request, response
        ):
            return response
        return json_error(response.status_code, headers=response)

    @staticmethod
    def _technical_page_to_public(request: HttpRequest, response: HttpResponse) -> bool:
        return (
            settings.DEBUG
            and came_through_lb(request)
            and (response.status_code in _TECHNICAL_STATUSES or response.status_code >= 500)
        )


class SecureCookieMiddleware:
    """Marks every cookie of a response Secure when the request came over TLS.

    Django's SESSION_COOKIE_SECURE / CSRF_COOKIE_SECURE are fixed at start; the same replica
    serves the TLS front (X-Forwarded-Proto: https, believed per SECURE_PROXY_SSL_HEADER) and
    plain-HTTP local use, where a Secure cookie would never come back. So decide per request
    (`DJANGO_SECURE_COOKIES=always` sets the static settings instead).
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.cookies and request.is_secure():
            for morsel in response.cookies.values():
                morsel["secure"] = True
        return response


def json_error(
    status: int,
    detail: str | None = None,
    code: str | None = None,
    headers: HttpResponse | None = None,
) -> JsonResponse:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {"detail": detail or f"{phrase}.", "code": code or ERROR_CODES.get(status, "error")}
    out = JsonResponse(body, status=status)
    if headers is not None:
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in headers:
                out[name] = headers[name]
    return out


class BodyLimitMiddleware:
    """413 before reading a body larger than allowed (DRF streams bodies past Django's check).

    Multipart uploads may be up to PHOTO_MAX_BYTES (+ form overhead); anything else up to
    DATA_UPLOAD_MAX_MEMORY_SIZE.
    """

    MULTIPART_OVERHEAD = 64 * 1024

    def __init__(self, get_response: Handler) -> None:
        from django.conf import settings

        self.get_response = get_response
        self.body_limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        self.upload_limit = int(settings.PHOTO_MAX_BYTES) + self.MULTIPART_OVERHEAD

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit():
            multipart = request.content_type == "multipart/form-data"
            limit = self.upload_limit if multipart else self.body_limit
            if int(declared) > limit:
                self._drain(request, int(declared))
                return json_error(
                    413, f"The request body is larger than {limit} bytes.", "body_too_large"
                )
        return self.get_response(request)

    MAX_DRAIN = 8 * 1024 * 1024

    def _drain(self, request: HttpRequest, declared: int) -> None:
        """Read (and drop) a moderately oversized body, so the client gets to read the 413.

        Closing a socket with unread input makes the kernel reset the connection, and most
        clients then report a reset instead of the answer. Huge bodies are not worth reading.
        """
        if declared > self.MAX_DRAIN:
            return
        stream = request.META.get("wsgi.input")
        remaining = declared
        while stream is not None and remaining > 0:
            chunk = stream.read(min(remaining, 64 * 1024))
            if not chunk:
                break
            remaining -= len(chunk)
