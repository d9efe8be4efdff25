"""The embedded default (SQLite shards): the stepwise seat hold keeps the same rules."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = [pytest.mark.processes]

SCRIPT = r"""
import datetime as dt, json, os, uuid
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "backend.settings"
django.setup()
from django.core.management import call_command
call_command("migrate_all", verbosity=0)
from backend.bookings.errors import AlreadyBooked, SoldOut, TourStarted
from backend.bookings.serializers import render_booking
from backend.bookings.services import booking_create, bookings_expire_due
from backend.sharding import shard_aliases, shard_for
from backend.tours.models import Tour

def tour(capacity, days=10):
    tid = uuid.uuid4()
    start = dt.date.today() + dt.timedelta(days=days)
    Tour.objects.using(shard_for(tid)).create(id=tid, name="t", price="5.00", start_date=start,
        end_date=start, capacity=capacity, seats_available=capacity)
    return tid

def seats(tid):
    return Tour.objects.using(shard_for(tid)).get(pk=tid).seats_available

def attempt(**kw):
    try:
        return booking_create(render=render_booking, **kw).body["status"]
    except (AlreadyBooked, SoldOut, TourStarted) as exc:
        return exc.code

out = {}
t = tour(3)
out["first"] = attempt(user_id=1, tour_id=t, seats=2)
out["again"] = attempt(user_id=1, tour_id=t, seats=1)
out["too_many"] = attempt(user_id=2, tour_id=t, seats=2)
out["last"] = attempt(user_id=2, tour_id=t, seats=1)
out["seats_after"] = seats(t)
out["started"] = attempt(user_id=3, tour_id=tour(3, days=0), seats=1)
later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
out["expired"] = bookings_expire_due(aliases=shard_aliases(), now=later)
out["expired_again"] = bookings_expire_due(aliases=shard_aliases(), now=later)
out["seats_final"] = seats(t)

# the hot-path rendering must match the serializer the schema documents, byte for byte
from decimal import Decimal
from backend.bookings.models import Booking
from backend.bookings.serializers import BookingSerializer
whole = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
fraction = dt.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
samples = [
    Booking(id=uuid.uuid4(), tour_id=uuid.uuid4(), user_id=7, seats=3, status="confirmed",
            total_price=Decimal("1234.5"), hold_expires_at=whole, created_at=fraction,
            updated_at=whole),
    *Booking.objects.using(shard_for(t)).filter(tour_id=t),
]
out["render_matches"] = all(render_booking(b) == dict(BookingSerializer(b).data) for b in samples)
print(json.dumps(out))
"""


def test_sqlite_shards_hold_the_same_rules(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),  # no key, no start: DEBUG too
        "BACKEND_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "",
        "SHARD_URLS": "",
        "BACKEND_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "first": "pending",
        "again": "already_booked",
        "too_many": "sold_out",
        "last": "pending",
        "seats_after": 0,
        "started": "tour_started",
        "expired": 2,
        "expired_again": 0,
        "seats_final": 3,
        "render_matches": True,
    }
    audit = subprocess.run(
        [sys.executable, "-m", "loadtest.verify"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
