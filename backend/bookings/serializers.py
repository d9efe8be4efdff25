"""Booking request and response shapes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from rest_framework import serializers

from backend.common import fields

from .models import Booking

MAX_SEATS_PER_BOOKING = 10
CENTS = Decimal("0.01")


class BookingCreateSerializer(serializers.Serializer):
    tour = fields.UUIDField()
    seats = fields.IntegerField(min_value=1, max_value=MAX_SEATS_PER_BOOKING)


class BookingSerializer(serializers.ModelSerializer):
    tour = serializers.UUIDField(source="tour_id", read_only=True)
    user = serializers.IntegerField(source="user_id", read_only=True)
    total_price = serializers.DecimalField(max_digits=12, decimal_places=2, read_only=True)

    class Meta:
        model = Booking
        fields = (
            "id",
            "tour",
            "user",
            "seats",
            "status",
            "total_price",
            "hold_expires_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


def _timestamp(value: dt.datetime) -> str:
    text = value.astimezone(dt.UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def render_booking(booking: Booking) -> dict[str, Any]:
    """The JSON body of a booking, exactly as BookingSerializer renders it, built directly.

    Every create response goes through this on the hot path (and is stored as-is for
    idempotent replays); DRF's field machinery costs more than the booking statement itself.
    A test keeps the two renderings identical.
    """
    return {
        "id": str(booking.id),
        "tour": str(booking.tour_id),
        "user": booking.user_id,
        "seats": booking.seats,
        "status": str(booking.status),
        "total_price": format(Decimal(booking.total_price).quantize(CENTS), "f"),
        "hold_expires_at": _timestamp(booking.hold_expires_at),
        "created_at": _timestamp(booking.created_at),
        "updated_at": _timestamp(booking.updated_at),
    }
