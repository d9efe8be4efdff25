"""`python -m backend create_staff --username U --password P`: create or update a staff user."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backend.accounts.services import staff_ensure


class Command(BaseCommand):
    help = "Create (or reset the password of) a staff superuser."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        user, created = staff_ensure(
            username=options["username"], password=options["password"], email=options["email"]
        )
        self.stdout.write(
            f"{'created' if created else 'updated'} staff user {user.username} (id {user.pk})"
        )
