"""Django app configuration for payments."""

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "backend.payments"
    label = "payments"
    default_auto_field = "django.db.models.BigAutoField"
