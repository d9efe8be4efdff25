"""The lb's own error answers: a small hierarchy with stable codes, and their one builder.

API clients get `{"detail", "code"}` JSON. A browser (its Accept names text/html and ranks it
at least as high as JSON) that meets a 429, 502, 503 or 504 gets instead a small self-contained
page in the site's look: it says what happened, counts down `Retry-After` and retries by
itself. Status and headers are the same either way.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

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


@functools.lru_cache(maxsize=256)  # a shed storm renders the same few bodies thousands of times
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
    error: LbError,
    headers: Headers = (),
    *,
    close: bool = False,
    head_only: bool = False,
    accept: str | None = None,
) -> bytes:
    """The same answer as raw HTTP/1.1 bytes, for the public listener's own server.

    `accept` is the request's Accept header: a browser asking for HTML gets the waiting page.
    """
    extra = tuple(headers)
    if error.status in PAGE_STATUSES and prefers_html(accept):
        body = waiting_page(error, retry_after(error.headers, extra))
        content_type = "text/html; charset=utf-8"
    else:
        body = error_body(error.code, error.detail)
        content_type = "application/json"
    lines = [
        f"HTTP/1.1 {error.status} {_reason(error.status)}\r\n",
        f"Content-Type: {content_type}\r\n",
        f"Content-Length: {len(body)}\r\n",
    ]
    lines += [f"{name}: {value}\r\n" for name, value in (*error.headers, *extra)]
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + body


@functools.lru_cache(maxsize=64)
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --- the waiting page for browsers -------------------------------------------------------------

PAGE_STATUSES: Final = frozenset({429, 502, 503, 504})
DEFAULT_PAGE_WAIT: Final = 5  # seconds before a page without Retry-After tries again
MAX_PAGE_WAIT: Final = 600

# (title, explanation) by error code; unknown codes fall back on their status
_PAGE_TEXT: Final = {
    "rate_limited": (
        "Just a moment",
        "Many requests came from your connection in a short time, so we are pacing them "
        "to keep the sale fair for everyone.",
    ),
    "overloaded": (
        "We are very busy right now",
        "So many people are booking at once that we are letting them in a few at a time.",
    ),
    "no_backend": (
        "We will be right back",
        "The booking service is briefly unavailable.",
    ),
    "admission_unavailable": (
        "We will be right back",
        "Part of our service is briefly unavailable.",
    ),
}
_STATUS_TEXT: Final = {
    429: _PAGE_TEXT["rate_limited"],
    502: ("Something went wrong", "Our service did not answer properly."),
    503: _PAGE_TEXT["no_backend"],
    504: ("This is taking too long", "Our service did not answer in time."),
}


def _quality(accept: str, media: str) -> float:
    """The q of the most specific range in `accept` that matches `media` (0: none does)."""
    major = media.split("/", 1)[0]
    best, best_rank = 0.0, -1
    for part in accept.split(","):
        fields = part.split(";")
        name = fields[0].strip().lower()
        if name == media:
            rank = 2
        elif name == f"{major}/*":
            rank = 1
        elif name == "*/*":
            rank = 0
        else:
            continue
        if rank < best_rank:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, best_rank = q, rank
    return best


def prefers_html(accept: str | None) -> bool:
    """A browser's Accept: text/html named outright, ranked at least as high as JSON.

    `*/*` alone (curl, requests, most API clients) or no Accept at all keeps the JSON.
    """
    if not accept or "html" not in accept.lower():
        return False
    html_q = _quality(accept, "text/html")
    return html_q > 0 and html_q >= _quality(accept, "application/json")


def retry_after(*header_lists: Headers) -> int | None:
    """The Retry-After seconds among these headers, if any (an HTTP date is not used here)."""
    for headers in header_lists:
        for name, value in headers:
            if name.lower() == "retry-after" and value.strip().isdigit():
                return int(value.strip())
    return None


def waiting_page(error: LbError, retry_after: int | None) -> bytes:
    """A small HTML page: no external asset, inline CSS, a countdown, then a retry by itself.

    The inline script navigates to the same address again (a GET); `<meta refresh>` does it
    when scripts are off.
    """
    title, explanation = _PAGE_TEXT.get(error.code) or _STATUS_TEXT.get(
        error.status, ("Please wait", "The service cannot answer right now.")
    )
    wait = min(max(retry_after if retry_after is not None else DEFAULT_PAGE_WAIT, 1), MAX_PAGE_WAIT)
    return _PAGE.format(
        status=error.status,
        title=html.escape(title),
        explanation=html.escape(explanation),
        detail=html.escape(error.detail),
        code=html.escape(error.code),
        wait=wait,
        fallback=wait + 2,
    ).encode()


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{fallback}">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>{title} · Tourbook</title>
<style>
body{{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f6f7f9}}
header{{padding:.75rem 1rem;background:#0b5cad;color:#fff;font-weight:700;font-size:1.25rem}}
main{{max-width:36rem;margin:2rem auto;padding:0 1rem}}
h1{{font-size:1.6rem;line-height:1.2}}
.box{{background:#fff;border:1px solid #d5dae1;border-radius:10px;padding:1rem 1.25rem}}
.count{{font-size:2.5rem;font-weight:700;color:#0b5cad}}
small{{color:#4a5461}}
a{{color:#0b5cad}}
:focus-visible{{outline:3px solid #f5b400;outline-offset:2px}}
</style></head>
<body><header>Tourbook</header>
<main><h1>{title}</h1>
<div class="box" role="status" aria-live="polite">
<p>{explanation}</p>
<p>Trying again in <span class="count" id="wait" data-wait="{wait}">{wait}</span> s.
This page reloads by itself; there is no need to refresh it.</p>
<p><a href="" id="retry">Try now</a></p>
</div>
<p><small>{status} · {code} · {detail}</small></p>
</main>
<script>
(function(){{var el=document.getElementById("wait"),left={wait};
var t=setInterval(function(){{left-=1;el.textContent=left>0?left:0;
if(left<=0){{clearInterval(t);location.replace(location.href);}}}},1000);}})();
</script>
</body></html>
"""
