"""Payment: one charge attempt for a booking, on the booking's shard. Never the card number."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class PaymentStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "succeeded"
    DECLINED = "declined", "declined"
    REFUNDED = "refunded", "refunded"


class Payment(models.Model):
    id = models.UUIDField(primary_key=True, editable=False)
    booking = models.ForeignKey(
        "bookings.Booking", on_delete=models.PROTECT, related_name="payments"
    )
    user_id = models.BigIntegerField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    status = models.CharField(max_length=16, choices=PaymentStatus.choices)
    card_brand = models.CharField(max_length=16, blank=True, default="")
    card_last4 = models.CharField(max_length=4)
    gateway_reference = models.CharField(max_length=64)
    decline_code = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField()
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("created_at",)
        constraints = [
            # one charge per booking: a second pay can never record a second charge
            models.UniqueConstraint(
                fields=["booking"],
                condition=Q(status__in=["succeeded", "refunded"]),
                name="payment_one_charge_per_booking",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["succeeded", "declined", "refunded"]),
                name="payment_status_known",
            ),
        ]

    def __str__(self) -> str:
        return f"payment {self.id} ({self.status}, {self.amount} {self.currency})"
