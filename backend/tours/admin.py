"""Django admin for tours: sharded (one shard per change list page, objects on their own shard)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from backend.sharding.admin import ShardedModelAdmin, ShardFilter
from backend.tours.cache import invalidate_tour_list
from backend.tours.models import Tour, TourPhoto


class TourPhotoInline(admin.TabularInline):
    model = TourPhoto
    extra = 0
    fields = ("file", "content_type", "size", "created_at")
    readonly_fields = ("content_type", "size", "created_at")
    can_delete = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # uploads go through POST /api/tours/{id}/photos/ (validated)


class TourAdminForm(forms.ModelForm):
    class Meta:
        model = Tour
        fields = ("name", "description", "price", "start_date", "end_date", "capacity")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance._state.db and "capacity" in data:
            stored = Tour.objects.using(self.instance._state.db).get(pk=self.instance.pk)
            booked = stored.capacity - stored.seats_available
            if data["capacity"] < booked:
                self.add_error("capacity", f"{booked} seats are booked; capacity cannot go below.")
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and end < start:
            self.add_error("end_date", "end_date must not be before start_date.")
        return data


@admin.register(Tour)
class TourAdmin(ShardedModelAdmin):
    list_display = (
        "name",
        "start_date",
        "end_date",
        "price",
        "capacity",
        "seats_available",
        "rating",
    )
    list_filter = (ShardFilter,)
    search_fields = ("name",)
    ordering = ("start_date", "id")
    readonly_fields = (
        "id",
        "seats_available",
        "rating",
        "rating_count",
        "created_at",
        "updated_at",
    )
    inlines = [TourPhotoInline]
    form = TourAdminForm

    def save_model(self, request: HttpRequest, obj: Tour, form: Any, change: bool) -> None:
        if not change:
            obj.seats_available = obj.capacity
        else:
            # the row lock keeps bookings from moving seats between the read and the write
            stored = Tour.objects.using(obj._state.db).select_for_update().get(pk=obj.pk)
            obj.seats_available = obj.capacity - (stored.capacity - stored.seats_available)
        super().save_model(request, obj, form, change)
        invalidate_tour_list()

    def delete_model(self, request: HttpRequest, obj: Tour) -> None:
        super().delete_model(request, obj)
        invalidate_tour_list()
