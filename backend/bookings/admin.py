"""Django admin for bookings: read-only pages on the booking's shard, plus a cancel action.

Status changes go through the services (seats, events, refunds stay consistent), never
through a form.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from backend.common.errors import DomainError
from backend.sharding.admin import ShardedModelAdmin, ShardFilter

from .models import Booking, BookingEvent
from .services import booking_cancel
from .shards import alias_for_booking


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class BookingEventInline(ReadOnlyMixin, admin.TabularInline):
    model = BookingEvent
    extra = 0
    fields = ("at", "from_status", "to_status", "actor_id", "reason")
    readonly_fields = fields


@admin.register(Booking)
class BookingAdmin(ReadOnlyMixin, ShardedModelAdmin):
    list_display = ("id", "tour_id", "user_id", "seats", "status", "total_price", "created_at")
    list_filter = (ShardFilter, "status")
    search_fields = ("=id", "=user_id")
    ordering = ("-created_at", "-id")
    inlines = [BookingEventInline]
    actions = ["cancel_bookings"]

    def shard_of_object_id(self, object_id: str) -> str | None:
        try:
            return alias_for_booking(uuid.UUID(str(object_id)))
        except ValueError:
            return None

    @admin.action(description="Cancel selected bookings (seats go back)")
    def cancel_bookings(self, request: HttpRequest, queryset: QuerySet[Booking]) -> None:
        done = 0
        for booking in queryset:
            try:
                booking_cancel(booking=booking, actor_id=request.user.pk)
                done += 1
            except DomainError as exc:
                self.message_user(request, f"{booking.pk}: {exc.detail}", messages.WARNING)
        self.message_user(request, f"{done} booking(s) cancelled or already inactive.")
