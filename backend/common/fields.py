"""Serializer fields that read numbers, dates and ids from ASCII text only.

DRF's IntegerField, DecimalField, DateField and UUIDField hand strings to int(), Decimal(),
a `\\d` regex and int(x, 16), and all of those accept any Unicode digit: "٣" (Arabic-Indic)
is 3, "²" passes str.isdigit() and then breaks int(). An API that means 0-9 says so: these
fields refuse any non-ASCII text with a 400 naming the field, then behave exactly as DRF's.
Every input serializer uses them (a test keeps it that way).
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

NON_ASCII_MESSAGE = "Use ASCII characters only (digits 0-9)."
ASCII_DIGITS = re.compile(r"[0-9]+")


class AsciiOnly:
    """Mixin: a non-ASCII string is invalid before the base field parses it."""

    default_error_messages = {"non_ascii": NON_ASCII_MESSAGE}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and not data.isascii():
            self.fail("non_ascii")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class IntegerField(AsciiOnly, serializers.IntegerField):
    pass


class DecimalField(AsciiOnly, serializers.DecimalField):
    pass


class DateField(AsciiOnly, serializers.DateField):
    pass


class UUIDField(AsciiOnly, serializers.UUIDField):
    pass


def is_ascii_digits(value: str) -> bool:
    """True for a non-empty string of 0-9 only (str.isdigit() also accepts "²" and "٣")."""
    return ASCII_DIGITS.fullmatch(value) is not None
