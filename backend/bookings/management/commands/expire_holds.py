"""`python -m backend expire_holds`: expire unpaid holds past BOOKING_HOLD_SECONDS, once each."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backend.bookings.services import bookings_expire_due
from backend.common.errors import ShardUnavailable
from backend.sharding import shard_aliases


class Command(BaseCommand):
    help = "Expire pending bookings whose hold ran out and give their seats back."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=200, help="bookings per transaction")
        parser.add_argument(
            "--every",
            type=float,
            default=0,
            help="repeat every N seconds until SIGTERM/SIGINT (default: run once)",
        )

    def handle(self, *args: Any, batch: int, every: float, **options: Any) -> None:
        if batch < 1:
            self.stderr.write("--batch must be >= 1")
            raise SystemExit(2)
        stop = threading.Event()
        if every > 0:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        while True:
            expired, failed = 0, []
            for alias in shard_aliases():
                try:
                    expired += bookings_expire_due(aliases=[alias], batch=batch)
                except ShardUnavailable:
                    # the other shards still release their holds; this one is retried next run
                    failed.append(alias)
            self.stdout.write(f"expired {expired} booking(s)")
            if failed:
                self.stderr.write(f"unreachable, retried next run: {', '.join(failed)}")
            if every <= 0:
                if failed:
                    raise SystemExit(1)
                return
            if stop.wait(every):
                return
