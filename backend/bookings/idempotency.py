"""Idempotency-Key plumbing for booking creation: request fingerprint and the per-key lock.

Semantics (design.md): the same key from the same user with the same body replays the first
response; a different body gets 422; while the first request is still running, 409. Only a
successful creation is stored (in the booking's own transaction); a failed attempt stores
nothing, so retrying it runs it again.

The key's record lives on the shard of the tour it booked, but a client may reuse the key for
a tour on another shard; so a keyed request holds the key's lock on EVERY shard it can reach
(`key_locked`), and two requests with one key never run at once, whatever their tours.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from django.db import InterfaceError, OperationalError, connections

from backend.sharding import shard_aliases

from .errors import IdempotencyInProgress

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


@contextlib.contextmanager
def key_locked(user_id: int, key: str, *, home: str) -> Iterator[None]:
    """Hold the key's lock on every shard for the block; IdempotencyInProgress if one is taken.

    Call it inside the open transaction on `home` (the booking's shard): there the lock is the
    transaction's own and lasts until the booking commits. On the other shards it is a session
    lock, released when the block ends: by then a competing request still finds `home` locked
    until the commit, and after the commit it finds the stored record. Every lock is a try-lock,
    so nobody waits and nothing deadlocks. A shard that cannot be reached is skipped: a request
    whose tour lives there cannot book anyway.
    """
    held: list[str] = []
    try:
        for alias in shard_aliases():
            if alias == home:
                got = try_lock(alias, user_id, key)
            else:
                try:
                    got = _try_session_lock(alias, user_id, key)
                except (OperationalError, InterfaceError):
                    continue
                if got:
                    held.append(alias)
            if not got:
                raise IdempotencyInProgress()
        yield
    finally:
        for alias in held:
            _unlock_session(alias, user_id, key)


def _try_session_lock(alias: str, user_id: int, key: str) -> bool:
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id(user_id, key)])
        (locked,) = cursor.fetchone()
    return bool(locked)


def _unlock_session(alias: str, user_id: int, key: str) -> None:
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id(user_id, key)])
    except (OperationalError, InterfaceError):
        # the server releases a session's locks when the session ends: make sure it ends
        connection.close()
