"""/api/bookings/ routes (included by backend/urls.py)."""

from django.urls import path

from backend.payments.apis import BookingPayApi

from .apis import BookingCancelApi, BookingDetailApi, BookingListCreateApi

urlpatterns = [
    path("", BookingListCreateApi.as_view(), name="booking-list"),
    path("<uuid:booking_id>/", BookingDetailApi.as_view(), name="booking-detail"),
    path("<uuid:booking_id>/pay/", BookingPayApi.as_view(), name="booking-pay"),
    path("<uuid:booking_id>/cancel/", BookingCancelApi.as_view(), name="booking-cancel"),
]
