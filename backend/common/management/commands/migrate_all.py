"""`python -m backend migrate_all`: migrate the default database, then every shard."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Apply migrations to the default database and to every shard database."

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options.get("verbosity", 1))
        for alias in ["default", *settings.SHARD_ALIASES]:
            if verbosity:
                self.stdout.write(f"migrating {alias}")
            call_command(
                "migrate", database=alias, interactive=False, verbosity=max(0, verbosity - 1)
            )
        if verbosity:
            self.stdout.write(
                self.style.SUCCESS(f"migrated default + {len(settings.SHARD_ALIASES)} shards")
            )
