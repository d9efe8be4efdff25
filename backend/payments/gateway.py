"""The payment gateway seam: the PaymentGateway interface and FakeGateway, its in-memory twin.

A real gateway (a card processor's API) implements the same two methods; `get_gateway()` picks
the class named by the PAYMENT_GATEWAY setting (a dotted path), FakeGateway by default.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from backend.common.errors import DomainError

APPROVE_CARD = "4242424242424242"
DECLINE_CARD = "4000000000000002"
INSUFFICIENT_FUNDS_CARD = "4000000000009995"


class GatewayUnavailable(DomainError):
    status = 503
    code = "payment_unavailable"
    detail = "The payment provider is unavailable; nothing was charged. Retry later."


@dataclass(frozen=True)
class Card:
    """Card details, in memory only for the length of one charge (never stored)."""

    number: str
    exp_month: int | None = None
    exp_year: int | None = None
    cvc: str = ""

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def brand(self) -> str:
        first = self.number[:1]
        return {"4": "visa", "5": "mastercard", "3": "amex"}.get(first, "card")

    def __repr__(self) -> str:  # keep the number out of logs and tracebacks
        return f"Card(****{self.last4})"


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reference: str
    decline_code: str = ""


class PaymentGateway(Protocol):
    def charge(
        self, *, amount: Decimal, currency: str, card: Card, idempotency_key: str
    ) -> ChargeResult:
        """Charge the card; the same idempotency_key never charges twice."""
        ...

    def refund(self, *, reference: str, amount: Decimal) -> None:
        """Give back a charge made earlier."""
        ...


class FakeGateway:
    """Approves 4242 4242 4242 4242 (and other cards), declines 4000 0000 0000 0002 / ...9995."""

    DECLINES = {DECLINE_CARD: "card_declined", INSUFFICIENT_FUNDS_CARD: "insufficient_funds"}

    def charge(
        self, *, amount: Decimal, currency: str, card: Card, idempotency_key: str
    ) -> ChargeResult:
        reference = "fake_ch_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        decline = self.DECLINES.get(card.number)
        if decline:
            return ChargeResult(approved=False, reference=reference, decline_code=decline)
        return ChargeResult(approved=True, reference=reference)

    def refund(self, *, reference: str, amount: Decimal) -> None:
        return None


@functools.cache
def _gateway(path: str) -> PaymentGateway:
    return import_string(path)()  # type: ignore[no-any-return]


def get_gateway() -> PaymentGateway:
    path = getattr(settings, "PAYMENT_GATEWAY", "backend.payments.gateway.FakeGateway")
    return _gateway(path)
