"""Probe endpoints answered before host validation; /metrics only to direct scrapers."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from backend.health import views

Handler = Callable[[HttpRequest], HttpResponse]

# Health checkers and Prometheus reach a replica by IP ("10.0.3.7:8001"), not by one of
# DJANGO_ALLOWED_HOSTS, so these paths must not depend on the Host header.
PROBES: dict[str, Handler] = {
    "/healthz": views.healthz,
    "/readyz": views.readyz,
    "/metrics": views.prometheus,
}


class ProbeMiddleware:
    """Answers the probe paths directly. The lb proxies every path and always sets
    X-Forwarded-For, so a /metrics request carrying it came from the public side: the
    replica's internals are not for the public, and it gets a JSON 404."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        if request.path_info == "/metrics" and "HTTP_X_FORWARDED_FOR" in request.META:
            return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
        return probe(request)
