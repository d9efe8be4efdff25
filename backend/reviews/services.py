"""Writing a review and the tour's rating, in one transaction on the tour's shard."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError
from django.db.models import Avg, Count
from django.utils import timezone

from backend.bookings.errors import TourNotFound
from backend.bookings.models import Booking, BookingStatus
from backend.bookings.shards import alias_for_tour
from backend.sharding import shard_atomic
from backend.tours.models import Tour

from .errors import AlreadyReviewed, NotAGuest
from .models import Review

TWO_PLACES = Decimal("0.01")


def review_create(
    *,
    tour_id: uuid.UUID,
    user_id: int,
    author: str,
    rating: int,
    comment: str = "",
    now: dt.datetime | None = None,
) -> Review:
    """Add a user's review and recompute the tour's rating and rating_count with it.

    Only a user with a confirmed booking for the tour may review it, once (409 after that).
    """
    now = now or timezone.now()
    alias = alias_for_tour(tour_id)
    with shard_atomic(alias):
        if not Tour.objects.using(alias).filter(pk=tour_id).exists():
            raise TourNotFound()
        guest = (
            Booking.objects.using(alias)
            .filter(tour_id=tour_id, user_id=user_id, status=BookingStatus.CONFIRMED)
            .exists()
        )
        if not guest:
            raise NotAGuest()
        review = Review(
            tour_id=tour_id,
            user_id=user_id,
            author=author,
            rating=rating,
            comment=comment,
            created_at=now,
        )
        try:
            review.save(using=alias, force_insert=True)
        except IntegrityError as exc:
            raise AlreadyReviewed() from exc
        # lock the tour row last and briefly: reviews committed before us are then visible
        # to the aggregate below, so concurrent reviews never lose each other's ratings
        Tour.objects.using(alias).select_for_update(no_key=True).filter(pk=tour_id).values(
            "pk"
        ).get()
        stats = (
            Review.objects.using(alias)
            .filter(tour_id=tour_id)
            .aggregate(avg=Avg("rating"), count=Count("id"))
        )
        average = Decimal(str(stats["avg"] or 0)).quantize(TWO_PLACES, rounding=ROUND_HALF_UP)
        Tour.objects.using(alias).filter(pk=tour_id).update(
            rating=average, rating_count=stats["count"]
        )
    return review
