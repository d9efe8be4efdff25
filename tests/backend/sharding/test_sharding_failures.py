"""Database failure classification (pure): unreachable -> the shard is down (503
shard_unavailable); busy (deadlock, lock timeout) -> retry shortly; anything else passes."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from django.db import DataError, InterfaceError, OperationalError

from backend.common.dberrors import classify


def _django_error(cause: BaseException, kind: type[Exception] = OperationalError) -> Exception:
    try:
        raise kind(str(cause)) from cause
    except kind as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (psycopg.OperationalError("connection refused"), "unreachable"),
        (psycopg.errors.AdminShutdown(), "unreachable"),
        (psycopg.errors.TooManyConnections(), "unreachable"),
        (psycopg.errors.ConnectionFailure(), "unreachable"),
        (psycopg.errors.DeadlockDetected(), "busy"),
        (psycopg.errors.SerializationFailure(), "busy"),
        (psycopg.errors.LockNotAvailable(), "busy"),
        (psycopg.errors.QueryCanceled(), "busy"),
        (psycopg.errors.DiskFull(), "unreachable"),
        (psycopg.errors.ObjectInUse(), "other"),
        (sqlite3.OperationalError("database is locked"), "busy"),
        (sqlite3.OperationalError("unable to open database file"), "unreachable"),
    ],
)
def test_classify_operational_errors(cause: BaseException, expected: str) -> None:
    assert classify(_django_error(cause)) == expected


def test_interface_errors_mean_unreachable_and_data_errors_are_other() -> None:
    assert classify(InterfaceError("connection already closed")) == "unreachable"
    assert classify(_django_error(psycopg.errors.StringDataRightTruncation(), DataError)) == "other"
