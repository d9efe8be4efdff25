"""Domain errors of payments."""

from __future__ import annotations

from backend.common.errors import DomainError


class PaymentDeclined(DomainError):
    status = 402
    code = "payment_declined"
    detail = "The card was declined; the booking is still pending, try another card."
