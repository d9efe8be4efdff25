"""Taking seats for a new booking, and giving seats back: the only writers of seats_available.

The tour row is the hot spot: every booking of a tour updates it, so whoever holds its row lock
holds up everyone else booking that tour. On PostgreSQL the whole hold is ONE statement (the
conditional decrement, the booking insert and its audit event as data-modifying CTEs): in
autocommit the row lock lasts one statement execution plus the commit, and a booking costs one
round trip. Elsewhere (the SQLite dev default) the same steps run as a short transaction with
the decrement last.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone

from backend.metrics import BOOKINGS
from backend.tours.cache import seats_changed
from backend.tours.models import Tour

from .errors import AlreadyBooked, IdempotencyInProgress, SoldOut, TourNotFound, TourStarted
from .models import Booking, BookingEvent, BookingStatus

TAKE_SEATS_SQL = """
WITH taken AS (
    UPDATE tours_tour SET seats_available = seats_available - %(seats)s
    WHERE id = %(tour)s AND seats_available >= %(seats)s AND start_date > %(today)s
    RETURNING price
), booking AS (
    INSERT INTO bookings_booking (id, tour_id, user_id, seats, status, total_price,
                                  hold_expires_at, idempotency_key, created_at, updated_at)
    SELECT %(id)s, %(tour)s, %(user)s, %(seats)s, 'pending', price * %(seats)s,
           %(expires)s, %(key)s, %(now)s, %(now)s
    FROM taken
    RETURNING id, total_price
), event AS (
    INSERT INTO bookings_bookingevent (booking_id, from_status, to_status, actor_id, reason, at)
    SELECT id, '', 'pending', %(user)s, 'created', %(now)s FROM booking
)
SELECT total_price FROM booking
"""


@dataclass(frozen=True)
class HoldRequest:
    user_id: int
    tour_id: uuid.UUID
    seats: int
    hold_seconds: int
    now: dt.datetime
    idempotency_key: str | None = None


def take_seats(alias: str, booking_id: uuid.UUID, req: HoldRequest) -> Booking:
    """Create the pending booking `booking_id` and take its seats, or raise why not.

    Raises TourNotFound, TourStarted, SoldOut, AlreadyBooked (one active booking per user and
    tour: the partial unique index says so), IdempotencyInProgress (the key's unique index).
    """
    expires = req.now + dt.timedelta(seconds=req.hold_seconds)
    try:
        if connections[alias].vendor == "postgresql":
            total = _take_in_one_statement(alias, booking_id, req, expires)
        else:
            total = _take_in_steps(alias, booking_id, req, expires)
    except IntegrityError as exc:
        if "idempotency" in str(exc):
            raise IdempotencyInProgress() from exc
        BOOKINGS.labels(outcome="already_booked").inc()
        raise AlreadyBooked() from exc
    if total is None:
        raise _why_not(alias, req)
    seats_changed(alias, req.tour_id)  # the lb's cached tour pages go at commit
    booking = _pending(booking_id, req, total, expires)
    booking._state.adding = False
    booking._state.db = alias
    return booking


def _pending(
    booking_id: uuid.UUID, req: HoldRequest, total: Decimal, expires: dt.datetime
) -> Booking:
    """The pending booking `req` asks for (not saved)."""
    return Booking(
        id=booking_id,
        tour_id=req.tour_id,
        user_id=req.user_id,
        seats=req.seats,
        status=BookingStatus.PENDING,
        total_price=total,
        hold_expires_at=expires,
        idempotency_key=req.idempotency_key,
        created_at=req.now,
        updated_at=req.now,
    )


def _take_in_one_statement(
    alias: str, booking_id: uuid.UUID, req: HoldRequest, expires: dt.datetime
) -> Decimal | None:
    params = {
        "id": booking_id,
        "tour": req.tour_id,
        "user": req.user_id,
        "seats": req.seats,
        "today": timezone.localdate(req.now),
        "expires": expires,
        "key": req.idempotency_key,
        "now": req.now,
    }
    with connections[alias].cursor() as cursor:
        cursor.execute(TAKE_SEATS_SQL, params)
        row = cursor.fetchone()
    return None if row is None else row[0]


def _take_in_steps(
    alias: str, booking_id: uuid.UUID, req: HoldRequest, expires: dt.datetime
) -> Decimal | None:
    with transaction.atomic(using=alias):
        tour = Tour.objects.using(alias).filter(pk=req.tour_id).values("price", "start_date")
        row = tour.first()
        if row is None or row["start_date"] <= timezone.localdate(req.now):
            return None
        booking = _pending(booking_id, req, row["price"] * req.seats, expires)
        booking.save(using=alias, force_insert=True)
        BookingEvent.objects.using(alias).create(
            booking=booking,
            from_status="",
            to_status=BookingStatus.PENDING,
            actor_id=req.user_id,
            reason="created",
            at=req.now,
        )
        # last, so the tour row stays locked only until the commit right after
        taken = (
            Tour.objects.using(alias)
            .filter(pk=req.tour_id, seats_available__gte=req.seats)
            .update(seats_available=F("seats_available") - req.seats)
        )
        if not taken:
            transaction.set_rollback(True, using=alias)
            return None
        return booking.total_price


def _why_not(alias: str, req: HoldRequest) -> Exception:
    """No seats were taken: say why (a read after the fact, only on this failure path)."""
    row = Tour.objects.using(alias).filter(pk=req.tour_id).values("start_date").first()
    if row is None:
        return TourNotFound()
    if row["start_date"] <= timezone.localdate(req.now):
        return TourStarted("This tour has already started; it can no longer be booked.")
    BOOKINGS.labels(outcome="sold_out").inc()
    return SoldOut()


def return_seats(*, alias: str, tour_id: uuid.UUID, seats: int) -> None:
    """Give seats back to a tour: one atomic increment (the CHECK keeps it <= capacity)."""
    Tour.objects.using(alias).filter(pk=tour_id).update(
        seats_available=F("seats_available") + seats
    )
    seats_changed(alias, tour_id)
