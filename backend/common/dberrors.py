"""Classify database failures (pure): the server is unreachable, or busy, or something else."""

from __future__ import annotations

from typing import Literal

from django.db import InterfaceError, OperationalError

Failure = Literal["unreachable", "busy", "other"]

# SQLSTATE classes: 08 connection exception, 53 insufficient resources (e.g. too many
# connections), 57P01-03 the server is shutting down / restarting / not accepting yet
_UNREACHABLE_PREFIXES = ("08", "53", "57P01", "57P02", "57P03")
# 40 transaction rollback (serialization failure, deadlock), 55P03 lock not available,
# 57014 statement timeout: retrying soon is right, but the server is fine
_BUSY_PREFIXES = ("40", "55P03", "57014")


def classify(exc: BaseException) -> Failure:
    """What a database exception says about the server; "other" for everything else."""
    if isinstance(exc, InterfaceError):
        return "unreachable"
    if not isinstance(exc, OperationalError):
        return "other"
    cause = exc.__cause__
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if state:
        if state.startswith(_UNREACHABLE_PREFIXES):
            return "unreachable"
        if state.startswith(_BUSY_PREFIXES):
            return "busy"
        return "other"
    if "locked" in str(exc).lower() or "busy" in str(exc).lower():
        return "busy"  # SQLite's "database is locked"
    # psycopg reports a refused or lost connection without a SQLSTATE
    return "unreachable"
