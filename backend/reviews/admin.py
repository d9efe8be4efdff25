"""Django admin for reviews: listed per shard, read-only (a review changes the tour's rating)."""

from __future__ import annotations

from django.contrib import admin

from backend.bookings.admin import ReadOnlyMixin
from backend.sharding.admin import ShardedModelAdmin, ShardFilter
from backend.sharding.shardmap import shard_aliases

from .models import Review


@admin.register(Review)
class ReviewAdmin(ReadOnlyMixin, ShardedModelAdmin):
    list_display = ("id", "tour_id", "author", "rating", "created_at")
    list_filter = (ShardFilter, "rating")
    ordering = ("-created_at", "-id")

    def shard_of_object_id(self, object_id: str) -> str | None:
        # review ids are per-shard integers: find the shard holding this one
        if not str(object_id).isdigit():
            return None
        for alias in shard_aliases():
            if Review.objects.using(alias).filter(pk=int(object_id)).exists():
                return alias
        return None
