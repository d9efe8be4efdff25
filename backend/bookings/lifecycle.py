"""A booking's status changes: the row, its audit event and the outcome metric, in one place.

Every change of a booking's status after its creation goes through here: cancel and expiry
(bookings/services.py) and payment (payments/services.py). So payments depend on bookings, and
bookings never on payments' internals through this module: the import graph has no cycle.
Creation writes its `pending` row and first event in the seat-taking statement (seats.py).
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from backend.metrics import BOOKINGS

from .models import Booking, BookingEvent, BookingStatus
from .seats import return_seats


def count(outcome: str, n: int = 1) -> None:
    """Count `n` booking attempts or changes that ended in `outcome` (backend_bookings_total)."""
    BOOKINGS.labels(outcome=outcome).inc(n)


def record_event(
    *,
    alias: str,
    booking: Booking,
    from_status: str,
    to_status: str,
    actor_id: int | None,
    reason: str,
    now: dt.datetime,
) -> None:
    """The audit row of one status change (the booking's history, read by the audit)."""
    BookingEvent.objects.using(alias).create(
        booking=booking,
        from_status=from_status,
        to_status=to_status,
        actor_id=actor_id,
        reason=reason,
        at=now,
    )


def change_status(
    *,
    alias: str,
    booking: Booking,
    to_status: str,
    actor_id: int | None,
    reason: str,
    now: dt.datetime,
) -> None:
    """Move a booking the caller has locked to `to_status`, with its event row."""
    previous = booking.status
    booking.status = to_status
    booking.updated_at = now
    booking.save(using=alias, update_fields=["status", "updated_at"])
    record_event(
        alias=alias,
        booking=booking,
        from_status=previous,
        to_status=to_status,
        actor_id=actor_id,
        reason=reason,
        now=now,
    )


def confirm_paid(*, alias: str, booking: Booking, now: dt.datetime) -> None:
    """A locked pending booking whose charge succeeded becomes confirmed (by its owner)."""
    change_status(
        alias=alias,
        booking=booking,
        to_status=BookingStatus.CONFIRMED,
        actor_id=booking.user_id,
        reason="paid",
        now=now,
    )


def release(
    *,
    alias: str,
    booking: Booking,
    to_status: str,
    actor_id: int | None,
    reason: str,
    now: dt.datetime,
) -> None:
    """Move a locked active booking to `to_status` (cancelled/expired) and give its seats back.

    Order matters: the seats go back BEFORE the booking row changes. Taking seats locks the
    tour row and then checks the one-active-booking index; if we changed the booking first and
    then waited for the tour row, a rebooking by the same user would wait on our booking change
    while holding the tour row we wait for: a deadlock. Only locking the booking row (FOR
    UPDATE, done by the caller) never makes that index check wait.
    """
    return_seats(alias=alias, tour_id=booking.tour_id, seats=booking.seats)
    change_status(
        alias=alias,
        booking=booking,
        to_status=to_status,
        actor_id=actor_id,
        reason=reason,
        now=now,
    )


def expire_locked(*, alias: str, booking: Booking, now: dt.datetime) -> None:
    """Expire a pending booking already locked by the caller's transaction; seats go back.

    Counted once the transaction commits (a rolled-back expiry did not happen).
    """
    release(
        alias=alias,
        booking=booking,
        to_status=BookingStatus.EXPIRED,
        actor_id=None,
        reason="hold_expired",
        now=now,
    )
    transaction.on_commit(lambda: count("expired"), using=alias)
