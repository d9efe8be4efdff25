"""Routes of the web site, mounted at / (the API stays under /api/, the admin under /admin/)."""

from django.urls import path

from . import account, catalogue, checkout

app_name = "site"

urlpatterns = [
    path("", catalogue.home, name="home"),
    path("tours/<uuid:tour_id>/", catalogue.tour_detail, name="tour"),
    path("tours/<uuid:tour_id>/seats/", catalogue.tour_seats, name="tour-seats"),
    path("tours/<uuid:tour_id>/book/", checkout.book, name="book"),
    path("tours/<uuid:tour_id>/review/", checkout.review, name="review"),
    path("bookings/", checkout.my_bookings, name="bookings"),
    path("bookings/<uuid:booking_id>/", checkout.booking_detail, name="booking"),
    path("bookings/<uuid:booking_id>/pay/", checkout.pay, name="pay"),
    path("bookings/<uuid:booking_id>/cancel/", checkout.cancel, name="cancel"),
    path("register/", account.register, name="register"),
    path("login/", account.site_login, name="login"),
    path("logout/", account.sign_out, name="logout"),
]
