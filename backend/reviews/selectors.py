"""Review reads: a tour's reviews, newest first."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from backend.bookings.errors import TourNotFound
from backend.bookings.shards import alias_for_tour
from backend.tours.models import Tour

from .models import Review


def review_list(*, tour_id: uuid.UUID) -> QuerySet[Review]:
    alias = alias_for_tour(tour_id)
    if not Tour.objects.using(alias).filter(pk=tour_id).exists():
        raise TourNotFound()
    return Review.objects.using(alias).filter(tour_id=tour_id).order_by("-created_at", "-id")
