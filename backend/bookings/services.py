"""Booking writes: create (seat hold), cancel, expire. Each one transaction on the tour's shard.

Lock discipline: the tour row is the hot spot (every booking of a tour updates it), so it is
locked as briefly as possible: taking seats is one statement (seats.py). Cancel and expiry
lock the booking row, do anything slow (a refund), then give the seats back and change the
booking status in two quick statements before the commit (lifecycle.release says why that
order). Every status change, its event row and its metric go through lifecycle.py.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from backend.payments.services import payment_refund_for_booking
from backend.sharding import on_shard, shard_atomic
from backend.tours.models import Tour

from . import idempotency, lifecycle
from .errors import (
    IdempotencyMismatch,
    TourStarted,
)
from .models import Booking, BookingEvent, BookingStatus, IdempotencyRecord
from .seats import HoldRequest, return_seats, take_seats
from .selectors import idempotency_record_find
from .shards import alias_for_tour, booking_id_for_tour

Renderer = Callable[[Booking], dict[str, Any]]


@dataclass(frozen=True)
class CreateResult:
    """The response of a creation: fresh, or replayed from a stored Idempotency-Key."""

    status: int
    body: dict[str, Any]
    replayed: bool


def hold_seconds() -> int:
    return int(getattr(settings, "BOOKING_HOLD_SECONDS", 600))


def tour_has_started(start: dt.date | dt.datetime, now: dt.datetime) -> bool:
    if isinstance(start, dt.datetime):
        return start <= now
    return start <= timezone.localdate(now)


def booking_create(
    *,
    user_id: int,
    tour_id: uuid.UUID,
    seats: int,
    render: Renderer,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    now: dt.datetime | None = None,
) -> CreateResult:
    """Hold `seats` on a tour for a user: a `pending` booking that expires after the hold.

    Raises TourNotFound, TourStarted, SoldOut, AlreadyBooked, IdempotencyInProgress,
    IdempotencyMismatch. With an Idempotency-Key, a repeat of a created booking is replayed;
    the key's record is written in the booking's own transaction.
    """
    now = now or timezone.now()
    alias = alias_for_tour(tour_id)
    req = HoldRequest(
        user_id=user_id,
        tour_id=tour_id,
        seats=seats,
        hold_seconds=hold_seconds(),
        now=now,
        idempotency_key=idempotency_key,
    )
    if idempotency_key is None:
        with on_shard(alias):
            body = render(take_seats(alias, booking_id_for_tour(tour_id), req))
    else:
        with (
            shard_atomic(alias),
            idempotency.key_locked(user_id, idempotency_key, home=alias),
        ):
            stored = _stored_response(alias, user_id, idempotency_key, fingerprint)
            if stored is not None:
                lifecycle.count("replayed")
                return stored
            booking = take_seats(alias, booking_id_for_tour(tour_id), req)
            body = render(booking)
            IdempotencyRecord.objects.using(alias).create(
                user_id=user_id,
                key=idempotency_key,
                request_hash=fingerprint,
                booking=booking,
                response_status=201,
                response_body=body,
                created_at=now,
            )
    lifecycle.count("created")
    return CreateResult(status=201, body=body, replayed=False)


def _stored_response(alias: str, user_id: int, key: str, fingerprint: str) -> CreateResult | None:
    """The replay for (user, key) if one is stored anywhere; 422 if its body differs."""
    record = idempotency_record_find(user_id=user_id, key=key, first_alias=alias)
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise IdempotencyMismatch()
    return CreateResult(status=record.response_status, body=record.response_body, replayed=True)


def booking_cancel(*, booking: Booking, actor_id: int, now: dt.datetime | None = None) -> Booking:
    """Cancel a pending or confirmed booking and return its seats, once.

    A booking already cancelled or expired is returned unchanged. Refused (409) once the tour
    has started. Permission (owner or staff) is the caller's check.
    """
    now = now or timezone.now()
    alias = booking._state.db or alias_for_tour(booking.tour_id)
    with shard_atomic(alias):
        locked = Booking.objects.using(alias).select_for_update(of=("self",)).get(pk=booking.pk)
        if not locked.is_active:
            return locked
        start = (
            Tour.objects.using(alias).values_list("start_date", flat=True).get(pk=locked.tour_id)
        )
        if tour_has_started(start, now):
            raise TourStarted("This tour has already started; the booking can't be cancelled.")
        if locked.status == BookingStatus.CONFIRMED:
            payment_refund_for_booking(alias=alias, booking=locked, now=now)
        lifecycle.release(
            alias=alias,
            booking=locked,
            to_status=BookingStatus.CANCELLED,
            actor_id=actor_id,
            reason="cancelled",
            now=now,
        )
    lifecycle.count("cancelled")
    return locked


def bookings_expire_due(
    *, aliases: Iterable[str], now: dt.datetime | None = None, batch: int = 200
) -> int:
    """Expire every pending booking whose hold has run out; returns how many expired.

    Batches of `batch` per transaction; rows another transaction holds (a payment in flight)
    are skipped and picked up by the next run, so each hold is released exactly once.
    """
    now = now or timezone.now()
    total = 0
    for alias in aliases:
        while True:
            expired = _expire_batch(alias, now, batch)
            total += expired
            if expired < batch:
                break
    return total


def _expire_batch(alias: str, now: dt.datetime, batch: int) -> int:
    with shard_atomic(alias):
        due = list(
            Booking.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(status=BookingStatus.PENDING, hold_expires_at__lte=now)
            .order_by("hold_expires_at")[:batch]
        )
        if not due:
            return 0
        released: dict[uuid.UUID, int] = {}
        for b in due:
            released[b.tour_id] = released.get(b.tour_id, 0) + b.seats
        # seats first, then the booking rows (see lifecycle.release); tours in a fixed order, so two
        # expiry runs never wait on each other in a cycle
        for tour_id in sorted(released, key=str):
            return_seats(alias=alias, tour_id=tour_id, seats=released[tour_id])
        Booking.objects.using(alias).filter(pk__in=[b.pk for b in due]).update(
            status=BookingStatus.EXPIRED, updated_at=now
        )
        BookingEvent.objects.using(alias).bulk_create(
            BookingEvent(
                booking=b,
                from_status=BookingStatus.PENDING,
                to_status=BookingStatus.EXPIRED,
                actor_id=None,
                reason="hold_expired",
                at=now,
            )
            for b in due
        )
    lifecycle.count("expired", len(due))
    return len(due)
