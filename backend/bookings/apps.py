"""Django app configuration for bookings."""

from django.apps import AppConfig


class BookingsConfig(AppConfig):
    name = "backend.bookings"
    label = "bookings"
    default_auto_field = "django.db.models.BigAutoField"
