"""Booking, its audit trail (BookingEvent) and stored Idempotency-Key responses; all on the tour's shard."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class BookingStatus(models.TextChoices):
    PENDING = "pending", "pending"
    CONFIRMED = "confirmed", "confirmed"
    CANCELLED = "cancelled", "cancelled"
    EXPIRED = "expired", "expired"


# statuses that hold seats; the seat invariant and the one-active-booking rule count these
ACTIVE_STATUSES = (BookingStatus.PENDING, BookingStatus.CONFIRMED)


class Booking(models.Model):
    """Seats of one tour held (pending) or sold (confirmed) to one user.

    The id carries the tour's logical shard (see ids.py), so a booking is found without a scan.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    # a tour is never deleted under its bookings (PROTECT); both rows live on the same shard
    tour = models.ForeignKey("tours.Tour", on_delete=models.PROTECT, related_name="bookings")
    # users live on the default database: a plain integer column, no cross-database FK
    user_id = models.BigIntegerField()  # indexed by booking_user_recent (user_id, -created_at)
    seats = models.PositiveSmallIntegerField()
    status = models.CharField(
        max_length=16, choices=BookingStatus.choices, default=BookingStatus.PENDING
    )
    total_price = models.DecimalField(max_digits=12, decimal_places=2)
    hold_expires_at = models.DateTimeField()
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["user_id", "-created_at"], name="booking_user_recent"),
            models.Index(
                fields=["hold_expires_at"],
                name="booking_pending_hold",
                condition=Q(status="pending"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "tour"],
                condition=Q(status__in=["pending", "confirmed"]),
                name="booking_one_active_per_user_tour",
            ),
            models.UniqueConstraint(
                fields=["user_id", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="booking_one_per_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(seats__gte=1), name="booking_seats_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "confirmed", "cancelled", "expired"]),
                name="booking_status_known",
            ),
        ]

    def __str__(self) -> str:
        return f"booking {self.id} ({self.status}, {self.seats} seats)"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class BookingEvent(models.Model):
    """One status change of a booking: the audit trail (append-only)."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16)
    # who did it: a user id, or null for the system (hold expiry)
    actor_id = models.BigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=64, blank=True, default="")
    at = models.DateTimeField()

    class Meta:
        ordering = ("at", "id")

    def __str__(self) -> str:
        return f"{self.booking_id}: {self.from_status or '-'} -> {self.to_status}"


class IdempotencyRecord(models.Model):
    """The first response to POST /api/bookings/ with an Idempotency-Key, replayed on retries.

    Written in the same transaction as the booking it created, on the tour's shard.
    """

    user_id = models.BigIntegerField()
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="+")
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_id", "key"], name="idempotency_user_key"),
        ]

    def __str__(self) -> str:
        return f"idempotency {self.user_id}/{self.key}"
