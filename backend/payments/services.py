"""Paying a booking: charge through the gateway and confirm, in one transaction on its shard.

The booking row is locked for the whole attempt, so two pay requests for one booking run one
after the other: the second finds the booking confirmed and charges nothing. A confirmed
booking and its succeeded Payment commit together, or neither does.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from backend.bookings import lifecycle
from backend.bookings.errors import BookingExpired, BookingNotPayable
from backend.bookings.ids import logical_shard_of, new_booking_id
from backend.bookings.models import Booking, BookingStatus
from backend.sharding import shard_atomic

from .errors import PaymentDeclined
from .gateway import Card, PaymentGateway, get_gateway
from .models import Payment, PaymentStatus

log = logging.getLogger(__name__)


def booking_pay(
    *,
    booking: Booking,
    card: Card,
    email: str = "",
    now: dt.datetime | None = None,
    gateway: PaymentGateway | None = None,
) -> Booking:
    """Pay a pending booking. Returns the confirmed booking (also when it was already paid).

    Raises BookingNotPayable (cancelled or expired), BookingExpired (the hold ran out: it is
    expired now and its seats are back), PaymentDeclined (402; the booking stays pending).
    """
    now = now or timezone.now()
    gateway = gateway or get_gateway()
    alias = booking._state.db
    declined = expired = False
    with shard_atomic(alias):
        locked = Booking.objects.using(alias).select_for_update().get(pk=booking.pk)
        if locked.status == BookingStatus.CONFIRMED:
            return locked
        if locked.status != BookingStatus.PENDING:
            raise BookingNotPayable(f"This booking is {locked.status}; it can't be paid.")
        if locked.hold_expires_at <= now:
            lifecycle.expire_locked(alias=alias, booking=locked, now=now)
            expired = True
        else:
            result = gateway.charge(
                amount=locked.total_price,
                currency=currency(),
                card=card,
                idempotency_key=f"booking:{locked.pk}",
            )
            Payment.objects.using(alias).create(
                # tagged like the booking id, so the payment's shard is known from its id
                id=new_booking_id(logical_shard_of(locked.pk)),
                booking=locked,
                user_id=locked.user_id,
                amount=locked.total_price,
                currency=currency(),
                status=PaymentStatus.SUCCEEDED if result.approved else PaymentStatus.DECLINED,
                card_brand=card.brand,
                card_last4=card.last4,
                gateway_reference=result.reference,
                decline_code=result.decline_code,
                created_at=now,
            )
            if result.approved:
                lifecycle.confirm_paid(alias=alias, booking=locked, now=now)
                if email:
                    transaction.on_commit(lambda: send_confirmation(locked, email), using=alias)
            else:
                declined = True
    if expired:
        raise BookingExpired()
    if declined:
        lifecycle.count("declined")
        raise PaymentDeclined()
    lifecycle.count("paid")
    return locked


def payment_refund_for_booking(*, alias: str, booking: Booking, now: dt.datetime) -> None:
    """Refund the charge of a confirmed booking being cancelled (inside the caller's transaction)."""
    payment = (
        Payment.objects.using(alias)
        .select_for_update()
        .filter(booking=booking, status=PaymentStatus.SUCCEEDED)
        .first()
    )
    if payment is None:
        return
    get_gateway().refund(reference=payment.gateway_reference, amount=payment.amount)
    payment.status = PaymentStatus.REFUNDED
    payment.refunded_at = now
    payment.save(using=alias, update_fields=["status", "refunded_at"])


def currency() -> str:
    return str(getattr(settings, "BOOKING_CURRENCY", "EUR"))


def send_confirmation(booking: Booking, email: str) -> None:
    """The confirmation email (Django's mail backend); runs after the commit, never fails a pay."""
    try:
        send_mail(
            subject=f"Your booking {booking.pk} is confirmed",
            message=(
                f"Booking {booking.pk}: {booking.seats} seat(s), "
                f"{booking.total_price} {currency()} paid. Thank you!"
            ),
            from_email=None,
            recipient_list=[email],
        )
    except Exception:
        log.exception("confirmation email for booking %s failed", booking.pk)
