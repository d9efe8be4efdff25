"""Django app configuration for reviews."""

from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "backend.reviews"
    label = "reviews"
    default_auto_field = "django.db.models.BigAutoField"
