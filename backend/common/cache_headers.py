"""Cache-Control for shared caches (the lb's micro-cache), chosen by route name.

Public tour reads (list, search, detail) may be reused by a shared cache for
EDGE_CACHE_MAX_AGE seconds, plus stale-while-revalidate / stale-if-error windows; they are
tagged (`Surrogate-Key`) so a write can purge exactly them. Anything per user (bookings,
any request with credentials) is `private, no-store`. A view that set Cache-Control itself
(e.g. a partial answer while a shard is down) keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from backend.tours.cache import collect_purges

Handler = Callable[[HttpRequest], HttpResponse]

PUBLIC_ROUTES = frozenset({"tour-list", "tour-detail"})
PRIVATE = "private, no-store"


def public_policy() -> str:
    return (
        f"public, max-age={settings.EDGE_CACHE_MAX_AGE}, "
        f"stale-while-revalidate={settings.EDGE_CACHE_STALE_WHILE_REVALIDATE}, "
        f"stale-if-error={settings.EDGE_CACHE_STALE_IF_ERROR}"
    )


def _personal(request: HttpRequest) -> bool:
    return "HTTP_AUTHORIZATION" in request.META or bool(request.COOKIES.get("sessionid"))


class CacheHeadersMiddleware:
    """Sets Cache-Control (and tags) by route; names the purges a write made."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with collect_purges() as purged:
            response = self.get_response(request)
        if purged:
            response["X-Cache-Purge"] = " ".join(sorted(purged))
        if response.has_header("Cache-Control"):
            return response
        match = request.resolver_match
        route = match.url_name if match is not None else None
        personal = _personal(request)
        if (
            request.method in ("GET", "HEAD")
            and route in PUBLIC_ROUTES
            and not personal
            and response.status_code in (200, 404)
        ):
            response["Cache-Control"] = public_policy()
            tour_id = match.kwargs.get("tour_id") if match is not None else None
            response["Surrogate-Key"] = f"tours tour:{tour_id}" if tour_id else "tours"
        elif (
            personal
            or (route or "").startswith("booking")
            or request.path.startswith("/api/bookings/")
        ):
            response["Cache-Control"] = PRIVATE
        return response
