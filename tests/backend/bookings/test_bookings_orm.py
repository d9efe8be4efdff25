"""Booking paths no HTTP test reaches, through the ORM in this process (django_orm, PostgreSQL):
the idempotency key's unique index, a keyed booking while the other shard is down, the
lifecycle's status changes, and the exception handler's fallback mapping."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import IntegrityError, InterfaceError, OperationalError
from django.db.models import ProtectedError
from django.http import Http404

from tests.support.databases import tour_on

pytestmark = [pytest.mark.postgres]

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _close_connections_after(django_orm: dict[str, str]) -> Iterator[None]:
    """Leave no open connection behind: a later test module (test_health) restarts a shard
    server, and the session's ORM must then connect afresh, not reuse a terminated session."""
    yield
    from django.db import connections

    connections.close_all()


@contextlib.contextmanager
def unreachable(alias: str) -> Iterator[None]:
    """`alias` points at a port nothing listens on for the block (connection refused); after
    it the shard is reachable again at once (its circuit, opened by the refusals, is reset)."""
    from django.db import connections

    from backend.sharding.circuit import circuits

    conn = connections[alias]
    conn.close()
    saved = dict(conn.settings_dict)
    conn.settings_dict["PORT"] = 1
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)
        circuits.reset()


def _user_id() -> int:
    return uuid.uuid4().int % 2**31


def test_a_second_booking_under_one_key_on_a_shard_is_in_progress(
    django_orm: dict[str, str],
) -> None:
    """The key's unique index is the backstop where the advisory lock is not (another database,
    a lock lost): a second booking row with the same (user, key) is "in progress", 409, never
    "already booked" (the user has no booking of that tour)."""
    from backend.bookings.errors import IdempotencyInProgress
    from backend.bookings.seats import HoldRequest, take_seats
    from backend.bookings.shards import booking_id_for_tour

    first, second = tour_on("shard_0", 5), tour_on("shard_0", 5)
    user = _user_id()

    def hold(tour: Any) -> Any:
        req = HoldRequest(
            user_id=user,
            tour_id=tour.pk,
            seats=1,
            hold_seconds=600,
            now=NOW,
            idempotency_key="same-key",
        )
        return take_seats("shard_0", booking_id_for_tour(tour.pk), req)

    assert hold(first).idempotency_key == "same-key"
    with pytest.raises(IdempotencyInProgress):
        hold(second)
    second.refresh_from_db(using="shard_0")
    assert second.seats_available == 5


def test_a_keyed_booking_succeeds_while_the_other_shard_is_down(
    django_orm: dict[str, str],
) -> None:
    """The key is locked on every shard it can reach; an unreachable one is skipped (a request
    whose tour lives there cannot book anyway), and the booking goes through."""
    from backend.bookings.models import IdempotencyRecord
    from backend.bookings.serializers import render_booking
    from backend.bookings.services import booking_create

    tour = tour_on("shard_0", 5)
    user = _user_id()
    with unreachable("shard_1"):
        made = booking_create(
            user_id=user,
            tour_id=tour.pk,
            seats=2,
            render=render_booking,
            idempotency_key="while-down",
            fingerprint="f1",
            now=NOW,
        )
        again = booking_create(
            user_id=user,
            tour_id=tour.pk,
            seats=2,
            render=render_booking,
            idempotency_key="while-down",
            fingerprint="f1",
            now=NOW,
        )
    assert (made.status, made.replayed) == (201, False)
    assert (again.status, again.replayed, again.body) == (201, True, made.body)
    record = IdempotencyRecord.objects.using("shard_0").get(user_id=user, key="while-down")
    assert str(record.booking_id) == made.body["id"]


def test_pay_and_cancel_go_through_the_lifecycle(django_orm: dict[str, str]) -> None:
    """Every status change writes its event row: created -> paid -> cancelled (refunded)."""
    from backend.bookings.models import Booking, BookingEvent
    from backend.bookings.serializers import render_booking
    from backend.bookings.services import booking_cancel, booking_create
    from backend.payments.gateway import Card
    from backend.payments.models import Payment
    from backend.payments.services import booking_pay

    tour = tour_on("shard_1", capacity=4)
    user = _user_id()
    now = dt.datetime.now(dt.UTC)
    made = booking_create(user_id=user, tour_id=tour.pk, seats=3, render=render_booking, now=now)
    booking = Booking.objects.using("shard_1").get(pk=made.body["id"])
    card = Card(number="4242424242424242", exp_month=12, exp_year=2040, cvc="123")
    paid = booking_pay(booking=booking, card=card, now=now)
    assert paid.status == "confirmed"
    cancelled = booking_cancel(booking=paid, actor_id=user, now=now)
    assert cancelled.status == "cancelled"
    events = list(
        BookingEvent.objects.using("shard_1")
        .filter(booking_id=booking.pk)
        .order_by("id")
        .values_list("from_status", "to_status", "reason", "actor_id")
    )
    assert events == [
        ("", "pending", "created", user),
        ("pending", "confirmed", "paid", user),
        ("confirmed", "cancelled", "cancelled", user),
    ]
    assert Payment.objects.using("shard_1").get(booking_id=booking.pk).status == "refunded"
    tour.refresh_from_db(using="shard_1")
    assert tour.seats_available == 4


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (IntegrityError("duplicate key value"), 409, "conflict"),
        (ProtectedError("still referenced", set()), 409, "conflict"),
        (OperationalError("could not connect to server"), 503, "database_unavailable"),
        (OperationalError("database is locked"), 503, "database_busy"),
        (InterfaceError("connection already closed"), 503, "database_unavailable"),
        (Http404(), 404, "not_found"),
        (DjangoPermissionDenied(), 403, "permission_denied"),
        (RequestDataTooBig(), 413, "body_too_large"),
        (SuspiciousOperation(), 400, "invalid"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_the_fallback_mapping_turns_framework_errors_into_json(
    django_orm: dict[str, str], error: Exception, status: int, code: str
) -> None:
    """Errors no view raises on purpose still answer {"detail", "code"} with the right status
    (a constraint is 409, an unreachable database 503 with Retry-After), never a 500."""
    from backend.common.exceptions import exception_handler

    response = exception_handler(error, {})
    assert response is not None
    assert (response.status_code, response.data["code"]) == (status, code)
    assert isinstance(response.data["detail"], str) and response.data["detail"]
    if status == 503:
        assert int(response["Retry-After"]) >= 1


def test_a_genuine_bug_is_left_to_the_json_500_handler(django_orm: dict[str, str]) -> None:
    from backend.common.exceptions import domain_error_for, exception_handler

    assert exception_handler(ZeroDivisionError("bug"), {}) is None
    assert domain_error_for(KeyError("bug")) is None
