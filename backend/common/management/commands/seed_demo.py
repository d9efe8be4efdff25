"""`python -m backend seed_demo`: demo tours spread over the shards and a staff user.

Idempotent: tour ids are derived from their names (uuid5), so a second run adds nothing.
The staff password is SEED_STAFF_PASSWORD, else a generated one; it is printed.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backend.accounts.services import staff_ensure
from backend.sharding import shard_for
from backend.tours.models import Tour
from backend.tours.services import tour_create

NAMESPACE = uuid.UUID("6f1d6c2e-6a57-4d8e-9d4e-2f7d2b1f0a11")

HOT = [
    ("Black Friday Alps Express", "1299.00", 200),
    ("Black Friday Lisbon Weekend", "399.00", 150),
    ("Black Friday Northern Lights", "899.00", 120),
    ("Black Friday Rome in a Day", "149.00", 300),
]
PLACES = [
    "Kyoto Temples",
    "Patagonia Trek",
    "Iceland Ring Road",
    "Amalfi Coast",
    "Sahara Nights",
    "Scottish Highlands",
    "Banff Lakes",
    "Cappadocia Balloons",
    "Vietnam Delta",
    "Norway Fjords",
    "Peru Sacred Valley",
    "Bali Rice Terraces",
    "Swiss Glacier Rail",
    "Croatia Islands",
    "Morocco Medinas",
    "Tuscany Vineyards",
    "Andes Stargazing",
    "Lapland Huskies",
    "Greek Islands Sail",
    "Danube Cycling",
]


class Command(BaseCommand):
    help = "Load demo tours (some 'Black Friday ...' hot ones) over every shard, and a staff user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--staff-username", default="staff")
        parser.add_argument("--tours", type=int, default=len(PLACES), help="ordinary tours")

    def handle(self, *args: Any, **options: Any) -> None:
        today = dt.date.today()
        specs: list[tuple[str, str, int]] = list(HOT)
        for i in range(options["tours"]):
            place = PLACES[i % len(PLACES)]
            name = place if i < len(PLACES) else f"{place} {i // len(PLACES) + 1}"
            specs.append((name, f"{199 + (i * 37) % 1500}.00", 20 + (i * 7) % 60))
        created = 0
        per_shard: Counter[str] = Counter()
        for i, (name, price, capacity) in enumerate(specs):
            tour_id = uuid.uuid5(NAMESPACE, name)
            alias = shard_for(tour_id)
            per_shard[alias] += 1
            if Tour.objects.using(alias).filter(pk=tour_id).exists():
                continue
            start = today + dt.timedelta(days=14 + (i * 5) % 120)
            tour_create(
                tour_id=tour_id,
                name=name,
                description=f"{name}: a demo tour.",
                price=Decimal(price),
                start_date=start,
                end_date=start + dt.timedelta(days=2 + i % 7),
                capacity=capacity,
            )
            created += 1
        password = os.environ.get("SEED_STAFF_PASSWORD") or secrets.token_urlsafe(12)
        user, _ = staff_ensure(username=options["staff_username"], password=password)
        spread = ", ".join(f"{alias}: {n}" for alias, n in sorted(per_shard.items()))
        self.stdout.write(f"tours: {created} created, {len(specs)} in the demo set ({spread})")
        self.stdout.write(f"staff user: {user.username} password: {password}")
