"""Tour and TourPhoto: both live on the tour's shard (shard_for(tour.id))."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q


class Tour(models.Model):
    """A bookable tour. seats_available is the live seat count bookings take from and return to."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    start_date = models.DateField()
    end_date = models.DateField()
    capacity = models.PositiveIntegerField()
    seats_available = models.IntegerField()
    rating = models.DecimalField(max_digits=3, decimal_places=2, default=0)
    rating_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("start_date", "id")
        indexes = [
            models.Index(fields=["start_date", "id"], name="tour_start"),
            models.Index(fields=["price", "id"], name="tour_price"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(seats_available__gte=0), name="tour_seats_nonneg"),
            models.CheckConstraint(
                condition=Q(seats_available__lte=F("capacity")), name="tour_seats_le_capacity"
            ),
            models.CheckConstraint(
                condition=Q(end_date__gte=F("start_date")), name="tour_dates_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.start_date})"


def photo_path(instance: TourPhoto, filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"tours/{instance.tour_id}/{uuid.uuid4().hex}.{ext}"


class TourPhoto(models.Model):
    """One uploaded photo, stored through Django's storage API (local files or S3)."""

    tour = models.ForeignKey(Tour, on_delete=models.CASCADE, related_name="photos")
    file = models.FileField(upload_to=photo_path, max_length=300)
    content_type = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("created_at", "id")

    def __str__(self) -> str:
        return self.file.name
