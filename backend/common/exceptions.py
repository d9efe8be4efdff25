"""The one exception handler (REST_FRAMEWORK["EXCEPTION_HANDLER"]): every API error as JSON.

Shape: `{"detail": str, "code": str}`; validation errors add `"errors": {field: [messages]}`.
Database failures never surface as 500: an unreachable database is 503 with Retry-After,
a violated constraint is 409.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import IntegrityError, InterfaceError, OperationalError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

from backend.common.dberrors import classify
from backend.common.errors import (
    Conflict,
    DatabaseBusy,
    DatabaseUnavailable,
    DomainError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ShardUnavailable,
    ValidationFailed,
)

log = logging.getLogger("backend.errors")


def _first_code(codes: Any) -> str:
    if isinstance(codes, str):
        return codes
    if isinstance(codes, list) and codes:
        return _first_code(codes[0])
    if isinstance(codes, dict) and codes:
        return _first_code(next(iter(codes.values())))
    return "error"


def _drf_body(exc: drf.APIException) -> dict[str, Any]:
    detail = exc.detail
    if isinstance(exc, drf.ValidationError):
        errors = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        return {"detail": "Invalid input.", "code": "invalid", "errors": errors}
    if isinstance(detail, dict):
        # e.g. simplejwt's {"detail", "code", "messages"}
        text = str(detail.get("detail", exc.default_detail))
        code = str(detail.get("code", exc.default_code))
        return {"detail": text, "code": code}
    if isinstance(detail, list):
        return {"detail": " ".join(str(d) for d in detail), "code": _first_code(exc.get_codes())}
    return {"detail": str(detail), "code": _first_code(exc.get_codes())}


def domain_error_for(exc: BaseException) -> DomainError | None:
    """Map a non-DRF exception to the domain error it stands for (None: a genuine bug)."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, Http404):
        return NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge()
    if isinstance(exc, SuspiciousOperation):
        return ValidationFailed("Bad request.")
    if isinstance(exc, ProtectedError | RestrictedError):
        return Conflict("Other records still refer to this one.")
    if isinstance(exc, IntegrityError):
        return Conflict("The change violates a data constraint.")
    if isinstance(exc, OperationalError | InterfaceError):
        if classify(exc) == "busy":
            return DatabaseBusy()
        # the PostgreSQL engine names the database (backend/sharding/postgresql): a shard
        # down is the same 503 shard_unavailable on every path, inside on_shard or not
        alias = str(getattr(exc, "database_alias", ""))
        return ShardUnavailable(alias) if alias.startswith("shard_") else DatabaseUnavailable()
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, drf.APIException):
        headers: dict[str, str] = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
        return Response(_drf_body(exc), status=exc.status_code, headers=headers)
    error = domain_error_for(exc)
    if error is None:
        return None  # a bug: Django's handler500 (JSON) answers and logs it
    if error.status >= 500:
        log.warning("%s: %s", error.code, exc)
    return Response(error.body(), status=error.status, headers=error.headers())
