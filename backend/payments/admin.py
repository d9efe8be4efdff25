"""Django admin for payments: read-only, on the payment's shard (its id carries the shard)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from backend.bookings.admin import ReadOnlyMixin
from backend.bookings.shards import alias_for_booking
from backend.sharding.admin import ShardedModelAdmin, ShardFilter

from .models import Payment


@admin.register(Payment)
class PaymentAdmin(ReadOnlyMixin, ShardedModelAdmin):
    list_display = ("id", "booking_id", "status", "amount", "currency", "card_last4", "created_at")
    list_filter = (ShardFilter, "status")
    search_fields = ("=booking__id",)
    ordering = ("-created_at",)

    def shard_of_object_id(self, object_id: str) -> str | None:
        try:
            return alias_for_booking(uuid.UUID(str(object_id)))
        except ValueError:
            return None

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_staff)
