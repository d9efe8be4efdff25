"""Booking on the site: hold seats, pay, see and cancel one's bookings, review a tour.

Every rule lives in the services (bookings, payments, reviews) and their serializers' input
checks; these views only turn forms into calls and domain errors into messages.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from backend.bookings.errors import BookingNotFound
from backend.bookings.models import Booking, BookingStatus
from backend.bookings.selectors import booking_get, booking_list
from backend.bookings.serializers import BookingCreateSerializer, render_booking
from backend.bookings.services import booking_cancel, booking_create
from backend.common.errors import DomainError
from backend.payments.errors import PaymentDeclined
from backend.payments.serializers import PaySerializer
from backend.payments.services import booking_pay
from backend.reviews.serializers import ReviewCreateSerializer
from backend.reviews.services import review_create
from backend.tours import selectors as tours

from .negotiation import error_page, page, post_only

BOOKINGS_PER_PAGE = 10


def _own_booking(request: HttpRequest, booking_id: uuid.UUID) -> Booking:
    """The booking if it is the user's own; anyone else's is the API's 404 (BookingNotFound)."""
    booking = booking_get(booking_id=booking_id, user=request.user)
    if booking.user_id != request.user.pk:
        raise BookingNotFound()  # staff may look through the API or the admin; here, owners only
    return booking


def _not_found(request: HttpRequest, exc: DomainError) -> HttpResponse:
    return error_page(request, exc.status, "Not found", exc.detail)


def _booking_page(request: HttpRequest, booking: Booking, **extra: Any) -> HttpResponse:
    """The booking's page; a form sent back with errors is a 200 too (a page, not a failure)."""
    context = {
        "booking": booking,
        "tour": tours.tour_get(tour_id=booking.tour_id),
        "payable": booking.status == BookingStatus.PENDING,
        "reviewable": booking.status == BookingStatus.CONFIRMED,
        "cancellable": booking.is_active,
        **extra,
    }
    return page(request, "site/booking.html", context)


@post_only("site:tour")
@login_required
def book(request: HttpRequest, tour_id: uuid.UUID) -> HttpResponse:
    form = BookingCreateSerializer(data={"tour": str(tour_id), "seats": request.POST.get("seats")})
    if not form.is_valid():
        messages.error(request, "Choose how many seats to book (1 to 10).")
        return redirect("site:tour", tour_id=tour_id)
    try:
        result = booking_create(
            user_id=request.user.pk,
            tour_id=tour_id,
            seats=form.validated_data["seats"],
            render=render_booking,
        )
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("site:tour", tour_id=tour_id)
    return redirect("site:booking", booking_id=result.body["id"])


@login_required
def booking_detail(request: HttpRequest, booking_id: uuid.UUID) -> HttpResponse:
    try:
        booking = _own_booking(request, booking_id)
    except DomainError as exc:
        return _not_found(request, exc)
    return _booking_page(request, booking)


@post_only("site:booking")
@login_required
def pay(request: HttpRequest, booking_id: uuid.UUID) -> HttpResponse:
    try:
        booking = _own_booking(request, booking_id)
    except DomainError as exc:
        return _not_found(request, exc)
    form = PaySerializer(
        data={k: v for k, v in request.POST.items() if v and k != "csrfmiddlewaretoken"}
    )
    if not form.is_valid():
        return _booking_page(request, booking, pay_errors=form.errors)
    try:
        booking = booking_pay(booking=booking, card=form.card(), email=request.user.email or "")
    except PaymentDeclined as exc:
        return _booking_page(request, booking, declined=exc.detail)
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("site:booking", booking_id=booking_id)
    messages.success(request, "Payment approved: your booking is confirmed.")
    return redirect("site:booking", booking_id=booking_id)


@login_required
@require_http_methods(["GET", "POST"])
def cancel(request: HttpRequest, booking_id: uuid.UUID) -> HttpResponse:
    try:
        booking = _own_booking(request, booking_id)
    except DomainError as exc:
        return _not_found(request, exc)
    if request.method == "GET":
        tour = tours.tour_get(tour_id=booking.tour_id)
        return page(request, "site/cancel.html", {"booking": booking, "tour": tour})
    try:
        booking_cancel(booking=booking, actor_id=request.user.pk)
    except DomainError as exc:
        messages.error(request, exc.detail)
        return redirect("site:booking", booking_id=booking_id)
    messages.success(request, "Your booking is cancelled; its seats are released.")
    return redirect("site:bookings")


@login_required
def my_bookings(request: HttpRequest) -> HttpResponse:
    # "my" bookings even for staff (booking_list shows staff everyone's, as the API does)
    mine = booking_list(user=SimpleNamespace(pk=request.user.pk, is_staff=False))
    paginator = Paginator(mine, BOOKINGS_PER_PAGE)
    current = paginator.get_page(request.GET.get("page"))
    names: dict[uuid.UUID, str] = {}
    rows = []
    for booking in current.object_list:
        if booking.tour_id not in names:
            names[booking.tour_id] = tours.tour_get(tour_id=booking.tour_id).name
        rows.append({"booking": booking, "tour_name": names[booking.tour_id]})
    return page(request, "site/bookings.html", {"rows": rows, "page_obj": current})


@post_only("site:tour")
@login_required
def review(request: HttpRequest, tour_id: uuid.UUID) -> HttpResponse:
    form = ReviewCreateSerializer(
        data={"rating": request.POST.get("rating"), "comment": request.POST.get("comment", "")}
    )
    if not form.is_valid():
        messages.error(
            request, "Give the tour 1 to 5 stars (and a comment of at most 2000 characters)."
        )
    else:
        try:
            review_create(
                tour_id=tour_id,
                user_id=request.user.pk,
                author=request.user.get_username(),
                rating=form.validated_data["rating"],
                comment=form.validated_data["comment"],
            )
        except DomainError as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, "Thank you: your review is published.")
    return redirect("site:tour", tour_id=tour_id)
