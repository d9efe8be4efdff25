"""Register, log in, log out: Django sessions (CSRF-protected forms). The JWT API is untouched."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import login, logout
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from backend.accounts.serializers import RegisterInput
from backend.accounts.services import user_register
from backend.common.errors import ValidationFailed

from .negotiation import page, post_only


def safe_next(request: HttpRequest, default: str = "/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    ok = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if ok else default


@require_http_methods(["GET", "POST"])
def register(request: HttpRequest) -> HttpResponse:
    errors: dict[str, Any] = {}
    values = {"username": "", "email": ""}
    if request.method == "POST":
        values = {k: request.POST.get(k, "").strip() for k in values}
        data = RegisterInput(data={**values, "password": request.POST.get("password", "")})
        if data.is_valid():
            try:
                user = user_register(**data.validated_data)
            except ValidationFailed as exc:
                errors = exc.extra.get("errors", {"non_field_errors": [exc.detail]})
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                return redirect(safe_next(request))
        else:
            errors = data.errors
    context = {"values": values, "errors": errors, "next": safe_next(request, "")}
    return page(request, "site/register.html", context)


site_login = LoginView.as_view(template_name="site/login.html", redirect_authenticated_user=True)


@post_only("site:home")
def sign_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("site:home")
