"""JSON handlers for Django's own 400/403/404/500 (handler400 ... in backend/urls.py)."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse

from backend.common.middleware import json_error

log = logging.getLogger("backend.errors")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):
        return json_error(413, "The request body is too large.", "body_too_large")
    return json_error(400, "Bad request.", "bad_request")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(
        403, "You do not have permission to perform this action.", "permission_denied"
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(404, "Not found.", "not_found")


def server_error(request: HttpRequest) -> JsonResponse:
    return json_error(500, "Internal server error.", "server_error")


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    return json_error(403, f"CSRF verification failed: {reason}".strip(), "csrf_failed")
