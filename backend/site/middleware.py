"""Session and CSRF cookies get `Secure` on requests that came over TLS.

Behind the TLS front (nginx in compose) `request.is_secure()` is true through the forwarded
protocol, and the browser then never sends these cookies over plain http. Plain-http setups
(the local stack, the test replicas) keep working, which a fixed SESSION_COOKIE_SECURE breaks.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class SecureCookiesBehindTls:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.names = (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.is_secure():
            for name in self.names:
                if name in response.cookies:
                    response.cookies[name]["secure"] = True
        return response
