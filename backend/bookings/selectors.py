"""Booking reads: one booking by id (straight to its shard), a user's bookings (every shard)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import InterfaceError, OperationalError

from backend import sharding

from .errors import BookingNotFound
from .merge import MergedBookings
from .models import Booking, IdempotencyRecord
from .shards import alias_for_booking


def booking_list(*, user: Any) -> MergedBookings:
    """A user's bookings on every shard (staff: everyone's), newest first. A shard that cannot
    be reached is left out and named in the result's `unavailable` (a partial list)."""
    aliases = sharding.shard_aliases()
    querysets = []
    for alias in aliases:
        qs = Booking.objects.using(alias).all()
        if not user.is_staff:
            qs = qs.filter(user_id=user.pk)
        querysets.append(qs)
    return MergedBookings(querysets, aliases, guard=sharding.on_shard)


def booking_get(*, booking_id: uuid.UUID, user: Any) -> Booking:
    """One booking, for its owner or staff; anyone else gets the same 404 as a missing id."""
    try:
        alias = alias_for_booking(booking_id)
    except (KeyError, IndexError, ValueError):
        raise BookingNotFound() from None
    with sharding.on_shard(alias):
        booking = Booking.objects.using(alias).filter(pk=booking_id).first()
    if booking is None or not (user.is_staff or booking.user_id == user.pk):
        raise BookingNotFound()
    return booking


def idempotency_record_find(
    *, user_id: int, key: str, first_alias: str
) -> IdempotencyRecord | None:
    """The stored response for (user, key): the tour's shard first, then the others.

    A key reused for another tour was stored on that tour's shard; finding it there lets the
    caller answer 422 instead of booking twice under one key. The other shards are a best
    effort: one that cannot be reached does not block bookings on this one.
    """
    record = IdempotencyRecord.objects.using(first_alias).filter(user_id=user_id, key=key).first()
    if record is not None:
        return record
    for alias in sharding.shard_aliases():
        if alias == first_alias:
            continue
        try:
            record = IdempotencyRecord.objects.using(alias).filter(user_id=user_id, key=key).first()
        except (OperationalError, InterfaceError):
            continue
        if record is not None:
            return record
    return None
