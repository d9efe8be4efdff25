"""Browsing: the home page (the sale's hot tours first, search, filters, pages) and a tour's page.

Lists come from the same selector and the same short-lived cache as `GET /api/tours/`: a page
of the site and the matching API page share one cache entry.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from backend.bookings.serializers import MAX_SEATS_PER_BOOKING
from backend.common.errors import DomainError
from backend.reviews.selectors import review_list
from backend.tours import selectors
from backend.tours.cache import tour_list_cache
from backend.tours.serializers import TourFilterInput, TourOutput

from .negotiation import error_page, page

SALE_QUERY = "Black Friday"  # the sale's hot tours are named after it (seed_demo, the load test)
PAGE_SIZE = 12
HOT_COUNT = 4
REVIEWS_SHOWN = 10
FILTER_FIELDS = ("search", "date_from", "date_to", "price_min", "price_max")


def tour_page(params: dict[str, Any], page_number: int, page_size: int) -> dict[str, Any]:
    """`{"count", "results"}` exactly as the API's list computes and caches it."""
    filters = selectors.TourFilters(**params)

    def compute() -> dict[str, Any]:
        found = selectors.tour_list(filters=filters, page=page_number, page_size=page_size)
        return {"count": found.count, "results": TourOutput(found.tours, many=True).data}

    data, _ = tour_list_cache.get_or_compute(
        {**params, "page": page_number, "page_size": page_size}, compute
    )
    return data


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    raw = {k: v.strip() for k, v in request.GET.items() if k in FILTER_FIELDS or k == "page"}
    given = {k: v for k, v in raw.items() if v}
    query = TourFilterInput(data=given)
    if not query.is_valid():
        context = {"form": raw, "errors": query.errors, "tours": [], "hot": [], "count": 0}
        return page(request, "site/home.html", context)
    params = dict(query.validated_data)
    number = params.pop("page")
    params.pop("page_size")
    listing = tour_page(params, number, PAGE_SIZE)
    filtered = any(k in given for k in FILTER_FIELDS)
    hot: list[dict[str, Any]] = []
    if not filtered and number == 1:
        hot = tour_page({"search": SALE_QUERY, "ordering": "start_date"}, 1, HOT_COUNT)["results"]
    keep = {k: v for k, v in given.items() if k != "page"}
    pages = max(1, -(-listing["count"] // PAGE_SIZE))
    context = {
        "form": raw,
        "hot": hot,
        "tours": listing["results"],
        "count": listing["count"],
        "filtered": filtered,
        "page_number": number,
        "pages": pages,
        "prev_url": f"?{urlencode({**keep, 'page': number - 1})}" if number > 1 else None,
        "next_url": f"?{urlencode({**keep, 'page': number + 1})}" if number < pages else None,
    }
    return page(request, "site/home.html", context)


@require_safe
def tour_detail(request: HttpRequest, tour_id: uuid.UUID) -> HttpResponse:
    try:
        tour = selectors.tour_get(tour_id=tour_id)
        reviews = list(review_list(tour_id=tour_id)[:REVIEWS_SHOWN])
    except DomainError as exc:
        return error_page(request, exc.status, "Tour not found", exc.detail)
    photos = TourOutput(tour).data["photo_urls"]
    context = {
        "tour": tour,
        "photos": photos,
        "reviews": reviews,
        "seat_choices": range(1, min(tour.seats_available, MAX_SEATS_PER_BOOKING) + 1),
    }
    return page(request, "site/tour.html", context)


@never_cache
@require_safe
def tour_seats(request: HttpRequest, tour_id: uuid.UUID) -> HttpResponse:
    """The small fragment the tour page polls: seats left, or sold out."""
    try:
        tour = selectors.tour_get(tour_id=tour_id)
    except DomainError as exc:
        return error_page(request, exc.status, "Tour not found", exc.detail)
    return page(request, "site/_seats.html", {"tour": tour})
