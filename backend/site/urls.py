"""Routes of the web site, mounted at / (the API stays under /api/, the admin under /admin/)."""

from collections.abc import Callable

from django.http import HttpResponse
from django.urls import URLPattern, path

from . import account, catalogue, checkout
from .negotiation import domain_errors_as_pages

app_name = "site"


def page(route: str, view: Callable[..., HttpResponse], name: str) -> URLPattern:
    """A route whose unhandled domain errors answer as pages (the API's status, a site page)."""
    return path(route, domain_errors_as_pages(view), name=name)


urlpatterns = [
    page("", catalogue.home, "home"),
    page("tours/<uuid:tour_id>/", catalogue.tour_detail, "tour"),
    page("tours/<uuid:tour_id>/seats/", catalogue.tour_seats, "tour-seats"),
    page("tours/<uuid:tour_id>/book/", checkout.book, "book"),
    page("tours/<uuid:tour_id>/review/", checkout.review, "review"),
    page("bookings/", checkout.my_bookings, "bookings"),
    page("bookings/<uuid:booking_id>/", checkout.booking_detail, "booking"),
    page("bookings/<uuid:booking_id>/pay/", checkout.pay, "pay"),
    page("bookings/<uuid:booking_id>/cancel/", checkout.cancel, "cancel"),
    page("register/", account.register, "register"),
    page("login/", account.site_login, "login"),
    page("logout/", account.sign_out, "logout"),
]
