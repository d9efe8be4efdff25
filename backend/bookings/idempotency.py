"""Idempotency-Key plumbing for booking creation: request fingerprint and the per-key lock.

Semantics (design.md): the same key from the same user with the same body replays the first
response; a different body gets 422; while the first request is still running, 409. Only a
successful creation is stored (in the booking's own transaction); a failed attempt stores
nothing, so retrying it runs it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from django.db import connections

MAX_KEY_LENGTH = 255


def request_fingerprint(method: str, path: str, body: Mapping[str, Any]) -> str:
    """A stable hash of what the request asks for (key order and spacing do not matter)."""
    canonical = json.dumps(
        {"method": method.upper(), "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def lock_id(user_id: int, key: str) -> int:
    """A signed 64-bit advisory-lock id for one (user, key)."""
    digest = hashlib.blake2b(f"{user_id}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def try_lock(alias: str, user_id: int, key: str) -> bool:
    """Take the key's lock for the current transaction on `alias`; False if another holds it.

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback (after the
    commit is visible, so the next holder sees the stored response). Other databases serialise
    writers themselves; the unique constraint on (user, key) is the backstop there.
    """
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_id(user_id, key)])
        (locked,) = cursor.fetchone()
    return bool(locked)
