"""Booking ids that carry their tour's logical shard, so a booking is found without a scan.

Layout: a random (version 4) UUID whose first byte is replaced by the logical shard number
(0..255). The shard map turns that number into a database alias exactly as it does for the
tour id, so `/api/bookings/{id}/` goes straight to one shard.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

MAX_LOGICAL_SHARDS = 256


def new_booking_id(logical_shard: int, randbytes: Callable[[int], bytes] = os.urandom) -> uuid.UUID:
    """A fresh booking id tagged with `logical_shard` (randomness injectable for tests)."""
    if not 0 <= logical_shard < MAX_LOGICAL_SHARDS:
        raise ValueError(f"logical shard {logical_shard} out of range 0..{MAX_LOGICAL_SHARDS - 1}")
    raw = bytearray(uuid.UUID(bytes=randbytes(16), version=4).bytes)
    raw[0] = logical_shard
    return uuid.UUID(bytes=bytes(raw))


def logical_shard_of(booking_id: uuid.UUID) -> int:
    """The logical shard a booking id was tagged with."""
    return booking_id.bytes[0]
