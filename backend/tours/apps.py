"""App config of tours."""

from django.apps import AppConfig


class ToursConfig(AppConfig):
    name = "backend.tours"
    label = "tours"
    default_auto_field = "django.db.models.BigAutoField"
