"""Booking request and response shapes."""

from __future__ import annotations

from rest_framework import serializers

from .models import Booking

MAX_SEATS_PER_BOOKING = 10


class BookingCreateSerializer(serializers.Serializer):
    tour = serializers.UUIDField()
    seats = serializers.IntegerField(min_value=1, max_value=MAX_SEATS_PER_BOOKING)


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


def render_booking(booking: Booking) -> dict:
    """The JSON body of a booking (plain types, so it can be stored for idempotent replays)."""
    data = BookingSerializer(booking).data
    return {key: (str(value) if key == "id" else value) for key, value in data.items()}
