"""The one domain error hierarchy: each error carries an HTTP status, a stable code and a detail.

Raise these from services and selectors; `backend.common.exceptions.exception_handler` is the
only place that turns them (and DRF's own errors) into `{"detail", "code"}` responses.
Subclasses override the class attributes; an instance may override `detail`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "error"
    detail: str = "The request could not be processed."

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        if detail is not None:
            self.detail = detail
        self.extra: dict[str, Any] = extra
        super().__init__(self.detail)

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. Retry-After)."""
        return {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}


class ValidationFailed(DomainError):
    status = 400
    code = "invalid"
    detail = "Invalid input."


class PermissionDenied(DomainError):
    status = 403
    code = "permission_denied"
    detail = "You do not have permission to perform this action."


class NotFound(DomainError):
    status = 404
    code = "not_found"
    detail = "Not found."


class Conflict(DomainError):
    status = 409
    code = "conflict"
    detail = "The request conflicts with the current state."


class PayloadTooLarge(DomainError):
    status = 413
    code = "body_too_large"
    detail = "The request body is too large."


class ServiceUnavailable(DomainError):
    status = 503
    code = "unavailable"
    detail = "Temporarily unavailable; retry later."
    retry_after: int = 5

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ShardUnavailable(ServiceUnavailable):
    """A shard database cannot be reached: its tours answer 503, the other shards keep working."""

    code = "shard_unavailable"

    def __init__(self, alias: str, detail: str | None = None) -> None:
        self.alias = alias
        super().__init__(detail or f"The data store for this resource ({alias}) is unavailable.")


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    detail = "The database is unavailable; retry later."


class DatabaseBusy(ServiceUnavailable):
    """A deadlock, serialization failure or lock timeout: nothing is broken, retry shortly."""

    code = "database_busy"
    detail = "The database is busy with conflicting work; retry shortly."
    retry_after = 1
