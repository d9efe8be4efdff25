"""App config of backend.common: owns the operator commands (migrate_all, seed_demo, create_staff)."""

from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "backend.common"
    label = "common"
