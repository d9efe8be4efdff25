"""/admin/login/ behind the same login guard as the API: back-off, 429 + Retry-After."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from backend.accounts.guard import client_address, guard_from_settings


def admin_login(request: HttpRequest) -> HttpResponse:
    """Django admin's login view, asked first whether a password may be checked at all."""
    if request.method != "POST":
        return admin.site.login(request)
    username = request.POST.get("username") or None
    address = client_address(request.META)
    guard = guard_from_settings()
    wait = guard.retry_after(username, address)
    if wait:
        response = HttpResponse(
            f"Too many failed logins. Retry in {wait} seconds.\n",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(wait)
        return response
    response = admin.site.login(request)
    if response.status_code == 302 and request.user.is_authenticated and username:
        guard.succeeded(username)
    elif response.status_code == 200 and username and request.POST.get("password"):
        # the form came back: the credentials were wrong (a CSRF refusal is a 403, not counted)
        guard.failed(username, address)
    return response
