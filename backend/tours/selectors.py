"""Tour reads: one tour from its shard, and the list merged across every shard."""

from __future__ import annotations

import datetime as dt
import heapq
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from backend.common.errors import NotFound, ValidationFailed
from backend.sharding import gather, on_shard, shard_for
from backend.tours.models import Tour

# ordering parameter -> model field; ties are broken by id so every shard agrees on the order
ORDERINGS = {
    "start_date": "start_date",
    "price": "price",
    "name": "name",
    "rating": "rating",
    "created_at": "created_at",
}
ORDERING_CHOICES = sorted([*ORDERINGS, *(f"-{o}" for o in ORDERINGS)])
MAX_LIST_DEPTH = 10_000  # page * page_size: each shard reads that many rows at most


class TourNotFound(NotFound):
    detail = "No tour with this id."


@dataclass(frozen=True)
class TourFilters:
    search: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    ordering: str = "start_date"


@dataclass(frozen=True)
class TourPage:
    """One page; `unavailable` names the shards that could not be read (their tours are
    missing from both `tours` and `count`)."""

    count: int
    tours: list[Tour]
    unavailable: tuple[str, ...] = ()


def tour_get(*, tour_id: uuid.UUID) -> Tour:
    alias = shard_for(tour_id)
    with on_shard(alias):
        tour = Tour.objects.using(alias).prefetch_related("photos").filter(pk=tour_id).first()
    if tour is None:
        raise TourNotFound()
    return tour


def _filtered(alias: str, filters: TourFilters) -> QuerySet[Tour]:
    qs = Tour.objects.using(alias).all()
    if filters.search:
        qs = qs.filter(name__icontains=filters.search)
    if filters.date_from is not None:
        qs = qs.filter(start_date__gte=filters.date_from)
    if filters.date_to is not None:
        qs = qs.filter(start_date__lte=filters.date_to)
    if filters.price_min is not None:
        qs = qs.filter(price__gte=filters.price_min)
    if filters.price_max is not None:
        qs = qs.filter(price__lte=filters.price_max)
    return qs


def _sort_key(field: str) -> Any:
    def key(tour: Tour) -> tuple[Any, uuid.UUID]:
        return (getattr(tour, field), tour.id)

    return key


def tour_list(*, filters: TourFilters, page: int, page_size: int) -> TourPage:
    """One page of the tours of every shard, filtered and ordered as one list.

    Each shard returns its first page*page_size rows in the requested order; a k-way merge of
    those sorted runs yields the global order, so the page is exact without reading more.
    A shard that cannot be reached is left out and named (a partial page); only when none
    can be read is it ShardUnavailable.
    """
    if page < 1 or page_size < 1:
        raise ValidationFailed("page and page_size must be positive.")
    depth = page * page_size
    if depth > MAX_LIST_DEPTH:
        raise ValidationFailed(
            f"Too deep: page * page_size must be at most {MAX_LIST_DEPTH}; narrow the filters.",
            errors={"page": [f"page * page_size must be at most {MAX_LIST_DEPTH}"]},
        )
    descending = filters.ordering.startswith("-")
    field = ORDERINGS[filters.ordering.lstrip("-")]
    order = (f"-{field}", "-id") if descending else (field, "id")

    def per_shard(alias: str) -> list[tuple[int, list[Tour]]]:
        qs = _filtered(alias, filters)
        rows = list(qs.order_by(*order).prefetch_related("photos")[:depth])
        # fewer rows than asked for means these are all of them: no COUNT query needed
        return [(len(rows) if len(rows) < depth else qs.count(), rows)]

    gathered = gather(per_shard)
    runs = gathered.results
    count = sum(n for n, _ in runs)
    merged = heapq.merge(*(rows for _, rows in runs), key=_sort_key(field), reverse=descending)
    tours = list(merged)[(page - 1) * page_size : depth]
    return TourPage(count=count, tours=tours, unavailable=gathered.unavailable)
