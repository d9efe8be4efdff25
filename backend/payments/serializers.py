"""The pay request: card details, checked (digits, Luhn, expiry) before any charge."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from backend.common.fields import IntegerField, is_ascii_digits

from .gateway import Card


def luhn_ok(number: str) -> bool:
    """The Luhn check of a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        digit = int(ch)
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


class PaySerializer(serializers.Serializer):
    card_number = serializers.CharField(max_length=40, trim_whitespace=True)
    exp_month = IntegerField(min_value=1, max_value=12, required=False)
    exp_year = IntegerField(min_value=2000, max_value=2200, required=False)
    # [0-9], not \d: in a str pattern \d also matches "٣" and every other Unicode digit
    cvc = serializers.RegexField(r"^[0-9]{3,4}\Z", required=False)

    def validate_card_number(self, value: str) -> str:
        digits = value.replace(" ", "").replace("-", "")
        # not str.isdigit(): it accepts "²" (which int() then refuses) and "٤" (which int()
        # reads as 4, so an Arabic-Indic number would pass Luhn and be charged)
        if not is_ascii_digits(digits) or not 12 <= len(digits) <= 19:
            raise serializers.ValidationError("Enter 12 to 19 digits (0-9).")
        if not luhn_ok(digits):
            raise serializers.ValidationError("This is not a valid card number.")
        return digits

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        month, year = attrs.get("exp_month"), attrs.get("exp_year")
        if (month is None) != (year is None):
            raise serializers.ValidationError(
                {"exp_year": ["Give exp_month and exp_year together."]}
            )
        if month is not None and year is not None:
            today: dt.date = timezone.localdate()
            if (year, month) < (today.year, today.month):
                raise serializers.ValidationError({"exp_year": ["This card has expired."]})
        return attrs

    def card(self) -> Card:
        data = self.validated_data
        return Card(
            number=data["card_number"],
            exp_month=data.get("exp_month"),
            exp_year=data.get("exp_year"),
            cvc=data.get("cvc", ""),
        )
