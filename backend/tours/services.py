"""Tour writes (staff): create, update, delete, add a photo. Each is one transaction on the tour's shard."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import ProtectedError

from backend.common.errors import Conflict, ValidationFailed
from backend.sharding import shard_atomic, shard_for
from backend.tours.cache import invalidate_tour_list
from backend.tours.models import Tour, TourPhoto
from backend.tours.photos import validate_image
from backend.tours.selectors import TourNotFound

log = logging.getLogger("backend.tours")

EDITABLE_FIELDS = ("name", "description", "price", "start_date", "end_date", "capacity")


class CapacityBelowBooked(Conflict):
    code = "capacity_below_booked"
    detail = "The new capacity is smaller than the seats already booked."


class TourHasBookings(Conflict):
    code = "tour_has_bookings"
    detail = "This tour has active bookings; cancel them before deleting it."


def _check_dates(start_date: dt.date, end_date: dt.date) -> None:
    if end_date < start_date:
        raise ValidationFailed(
            "Invalid input.", errors={"end_date": ["end_date must not be before start_date."]}
        )


def _after_commit(alias: str) -> None:
    transaction.on_commit(invalidate_tour_list, using=alias)


def tour_create(
    *,
    name: str,
    price: Decimal,
    start_date: dt.date,
    end_date: dt.date,
    capacity: int,
    description: str = "",
    tour_id: uuid.UUID | None = None,
) -> Tour:
    """A new tour on shard_for(its fresh uuid4), with every seat available."""
    _check_dates(start_date, end_date)
    tour = Tour(
        id=tour_id or uuid.uuid4(),
        name=name,
        description=description,
        price=price,
        start_date=start_date,
        end_date=end_date,
        capacity=capacity,
        seats_available=capacity,
    )
    alias = shard_for(tour.id)
    with shard_atomic(alias):
        tour.save(using=alias, force_insert=True)
        _after_commit(alias)
    return tour


def tour_update(*, tour_id: uuid.UUID, changes: dict[str, Any]) -> Tour:
    """Apply changes under a row lock; a capacity change keeps the seats already booked."""
    alias = shard_for(tour_id)
    with shard_atomic(alias):
        tour = Tour.objects.using(alias).select_for_update().filter(pk=tour_id).first()
        if tour is None:
            raise TourNotFound()
        booked = tour.capacity - tour.seats_available
        for field in EDITABLE_FIELDS:
            if field in changes:
                setattr(tour, field, changes[field])
        _check_dates(tour.start_date, tour.end_date)
        if tour.capacity < booked:
            raise CapacityBelowBooked(
                f"{booked} seats are booked; capacity cannot go below that.",
                errors={"capacity": [f"must be at least {booked}"]},
            )
        tour.seats_available = tour.capacity - booked
        tour.save(using=alias)
        _after_commit(alias)
    return tour


def tour_delete(*, tour_id: uuid.UUID) -> None:
    alias = shard_for(tour_id)
    with shard_atomic(alias):
        tour = Tour.objects.using(alias).select_for_update().filter(pk=tour_id).first()
        if tour is None:
            raise TourNotFound()
        if tour.seats_available != tour.capacity:
            raise TourHasBookings()
        files = [photo.file.name for photo in tour.photos.all()]
        try:
            with transaction.atomic(using=alias):
                tour.delete(using=alias)
        except ProtectedError:
            # bookings that no longer hold seats (cancelled, expired) still refer to it
            raise TourHasBookings(
                "This tour has a booking history; it cannot be deleted."
            ) from None
        _after_commit(alias)
        transaction.on_commit(lambda: _delete_files(files), using=alias)


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # a leftover file is harmless; a failed delete must not fail the API
            log.warning("could not delete stored file %s", name, exc_info=True)


def tour_photo_add(*, tour_id: uuid.UUID, upload: UploadedFile) -> TourPhoto:
    """Validate the upload, store it through the storage backend, record it on the tour's shard."""
    content_type = validate_image(upload, upload.size or 0, settings.PHOTO_MAX_BYTES)
    alias = shard_for(tour_id)
    with shard_atomic(alias):
        tour = Tour.objects.using(alias).filter(pk=tour_id).first()
        if tour is None:
            raise TourNotFound()
        photo = TourPhoto(tour=tour, content_type=content_type, size=upload.size or 0)
        # the stored name comes from the verified type, never from the client's file name
        photo.file.save(f"photo.{content_type.split('/')[1]}", upload, save=False)
        try:
            photo.save(using=alias)
        except Exception:
            _delete_files([photo.file.name])  # no row, so no file either
            raise
        _after_commit(alias)
    return photo
