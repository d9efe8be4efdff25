"""Does a request want a page? The Accept decision (pure), and the site's HTML error answers.

API clients and tools send `Accept: application/json`, `*/*` or nothing: they keep the JSON
error bodies. A browser asks for `text/html` first; only then does it get a page.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render

from backend.common import views as json_views
from backend.common.exceptions import domain_error_for


def _quality(accept: str, wanted: str) -> float:
    """The q of the most specific Accept range matching `wanted` (0 when none matches)."""
    major = wanted.split("/", 1)[0]
    best, best_rank = 0.0, -1
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        rank = 2 if media == wanted else 1 if media == f"{major}/*" else 0 if media == "*/*" else -1
        if rank < best_rank or rank < 0:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, best_rank = q, rank
    return best


def prefers_html(accept: str | None) -> bool:
    """True when text/html is named explicitly and ranks at least as high as JSON."""
    if not accept or "html" not in accept.lower():
        return False
    html = _quality(accept, "text/html")
    return html > 0 and html >= _quality(accept, "application/json")


def wants_page(request: HttpRequest) -> bool:
    return prefers_html(request.headers.get("Accept"))


def page(
    request: HttpRequest, template: str, context: dict[str, object], status: int = 200
) -> HttpResponse:
    """A site page. Marked so the JSON error middleware leaves a 4xx page as HTML."""
    response = render(request, template, context, status=status)
    response.site_page = True  # type: ignore[attr-defined]
    return response


def post_only(target: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A form's action: POST runs the view, a GET goes to the page `target` (same URL kwargs).

    A browser can land on an action's address with a GET: the lb's waiting page retries the
    address it was shown on, and people reload. A redirect to the page is kinder than a 405.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method in ("GET", "HEAD"):
                return redirect(target, **kwargs)
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


def error_page(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    return page(request, "site/error.html", {"title": title, "message": message}, status)


TITLES = {404: "Not found", 409: "That did not work", 503: "Please try again in a moment"}


def domain_errors_as_pages(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A domain error a view did not handle (a shard down: 503, too deep a page: 400) becomes
    a page with the API's status and headers (Retry-After), the way the API answers JSON."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Exception as exc:
            error = domain_error_for(exc)
            if error is None:
                raise  # a bug: handler500 answers and logs it
            title = TITLES.get(error.status, "Something went wrong")
            response = error_page(request, error.status, title, error.detail)
            for name, value in error.headers().items():
                response[name] = value
            return response

    return wrapped


# --- handlers wired in backend/urls.py and settings (JSON unless a browser asks for a page) ---


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if wants_page(request):
        return error_page(request, 404, "Page not found", "There is nothing at this address.")
    return json_views.not_found(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if wants_page(request):
        return error_page(
            request,
            403,
            "This form has expired",
            "For your safety the form could not be accepted. Go back, reload the page and "
            "send it again.",
        )
    return json_views.csrf_failure(request, reason)
