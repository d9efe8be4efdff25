"""`python -m loadtest.verify`: audit the booking invariants on every shard; non-zero on violation.

Which databases: DATABASE_URL / SHARD_URLS (or BACKEND_VAR_DIR) from the environment, read by
the backend's own function (backend.common.env.database_map); with none of them set, the stack
`python -m ops up` last started, from its `var/stack.env` (`--stack-env` names another file);
with neither it says so in one line. It only reads: SQLite files are opened read-only
(`mode=ro`) and a missing one is refused, never created.

It checks, with plain SQL on each shard (a tour and its bookings share one shard):

  seats      seats_available + seats of pending and confirmed bookings == capacity, per tour
  bounds     0 <= seats_available <= capacity
  active     at most one pending or confirmed booking per user and tour
  idempotency  one Idempotency-Key (per user, across all shards) never made two bookings
  paid       no confirmed booking without a succeeded payment

Exit status: 0 all hold (a summary is printed), 1 violations (the offending rows are printed),
2 nothing to audit or a database could not be read.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ACTIVE = "('pending', 'confirmed')"
HELD = f"COALESCE(SUM(CASE WHEN b.status IN {ACTIVE} THEN b.seats ELSE 0 END), 0)"
MAX_ROWS_SHOWN = 20

CHECKS: dict[str, str] = {
    "seats": f"""
        SELECT t.id AS tour, t.capacity, t.seats_available, {HELD} AS held
        FROM tours_tour t LEFT JOIN bookings_booking b ON b.tour_id = t.id
        GROUP BY t.id, t.capacity, t.seats_available
        HAVING t.seats_available + {HELD} <> t.capacity
        ORDER BY t.id""",
    "bounds": """
        SELECT id AS tour, capacity, seats_available FROM tours_tour
        WHERE seats_available < 0 OR seats_available > capacity ORDER BY id""",
    "active": f"""
        SELECT user_id, tour_id AS tour, COUNT(*) AS active_bookings FROM bookings_booking
        WHERE status IN {ACTIVE}
        GROUP BY user_id, tour_id HAVING COUNT(*) > 1 ORDER BY user_id""",
    "paid": """
        SELECT b.id AS booking, b.user_id, b.tour_id AS tour FROM bookings_booking b
        WHERE b.status = 'confirmed' AND NOT EXISTS (
            SELECT 1 FROM payments_payment p
            WHERE p.booking_id = b.id AND p.status = 'succeeded')
        ORDER BY b.id""",
}
KEYED_BOOKINGS = """
    SELECT user_id, idempotency_key, id FROM bookings_booking WHERE idempotency_key IS NOT NULL
    UNION ALL
    SELECT user_id, key, booking_id FROM bookings_idempotencyrecord"""
SUMMARY = {
    "tours": "SELECT COUNT(*), COALESCE(SUM(capacity), 0), COALESCE(SUM(seats_available), 0)"
    " FROM tours_tour",
    "bookings": "SELECT status, COUNT(*), COALESCE(SUM(seats), 0) FROM bookings_booking"
    " GROUP BY status",
    "payments": "SELECT status, COUNT(*) FROM payments_payment GROUP BY status",
}


@dataclass
class Violation:
    check: str
    shard: str
    row: dict[str, Any]

    def __str__(self) -> str:
        cells = ", ".join(f"{k}={v}" for k, v in self.row.items())
        return f"VIOLATION [{self.check}] on {self.shard}: {cells}"


@dataclass
class Audit:
    violations: list[Violation] = field(default_factory=list)
    tours: int = 0
    capacity: int = 0
    seats_available: int = 0
    bookings: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    payments: dict[str, int] = field(default_factory=lambda: defaultdict(int))


DATABASE_VARIABLES = ("DATABASE_URL", "SHARD_URLS", "BACKEND_VAR_DIR")
DEFAULT_STACK_ENV = Path("var") / "stack.env"


class NothingToAudit(Exception):
    """No database to read: one line saying what is needed."""


def env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines (as ops up writes var/stack.env); blank lines and comments skipped."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def audit_environment(env: Mapping[str, str], stack_env: Path) -> Mapping[str, str]:
    """The environment naming the databases: the caller's, if it names any; else the stack's."""
    if any(env.get(name) for name in DATABASE_VARIABLES):
        return env
    if stack_env.is_file():
        return {**env, **env_file(stack_env)}
    raise NothingToAudit(
        "nothing to audit: set DATABASE_URL and SHARD_URLS, or start the stack with "
        f"`python -m ops up` (it writes {stack_env}), or name its file with --stack-env"
    )


def read_only(databases: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same databases opened read-only: an SQLite file must exist and is opened with
    `mode=ro` (so a wrong path can never leave an empty database behind)."""
    out: dict[str, dict[str, Any]] = {}
    for alias, config in databases.items():
        config = dict(config)
        if "sqlite" in str(config.get("ENGINE", "")):
            path = Path(str(config["NAME"]))
            if not path.is_file():
                raise NothingToAudit(f"{alias}: {path} does not exist (nothing to audit there)")
            # a live stack keeps its write-ahead log beside the file: read it (mode=ro). Without
            # one, nothing writes the file now, and immutable=1 keeps SQLite from creating the
            # -wal/-shm files a read-only WAL reader would otherwise leave behind
            query = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
            config["NAME"] = f"file:{urllib.parse.quote(str(path.resolve()))}?{query}"
            options = dict(config.get("OPTIONS") or {})
            for writes in ("init_command", "transaction_mode"):
                options.pop(writes, None)
            config["OPTIONS"] = options
        out[alias] = config
    return out


def database_settings(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The backend's databases from the environment, read-only: "default" plus "shard_0".."""
    from backend.common.env import database_map

    var = Path(env.get("BACKEND_VAR_DIR") or ROOT / "var")
    return read_only(database_map(env, var))


def _rows(cursor: Any, sql: str) -> list[dict[str, Any]]:
    cursor.execute(sql)
    names = [col[0] for col in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def audit(aliases: Sequence[str]) -> Audit:
    """Run every check on every shard (Django's connections must be configured)."""
    from django.db import connections

    result = Audit()
    keyed: dict[tuple[Any, str], set[tuple[str, str]]] = defaultdict(set)
    for alias in aliases:
        with connections[alias].cursor() as cursor:
            for check, sql in CHECKS.items():
                for row in _rows(cursor, sql):
                    result.violations.append(Violation(check, alias, row))
            cursor.execute(KEYED_BOOKINGS)
            for user_id, key, booking_id in cursor.fetchall():
                keyed[(user_id, key)].add((alias, str(booking_id).replace("-", "")))
            cursor.execute(SUMMARY["tours"])
            tours, capacity, available = cursor.fetchone()
            result.tours += tours
            result.capacity += int(capacity)
            result.seats_available += int(available)
            cursor.execute(SUMMARY["bookings"])
            for status, count, seats in cursor.fetchall():
                result.bookings[status][0] += count
                result.bookings[status][1] += int(seats)
            cursor.execute(SUMMARY["payments"])
            for status, count in cursor.fetchall():
                result.payments[status] += count
    for (user_id, key), bookings in sorted(keyed.items(), key=lambda kv: str(kv[0])):
        distinct = {booking for _, booking in bookings}
        if len(distinct) > 1:
            shards = ",".join(sorted({alias for alias, _ in bookings}))
            row = {"user_id": user_id, "key": key, "bookings": ",".join(sorted(distinct))}
            result.violations.append(Violation("idempotency", shards, row))
    return result


def report(result: Audit, shards: int, out: Any = sys.stdout) -> int:
    if result.violations:
        by_check: dict[str, int] = defaultdict(int)
        for violation in result.violations:
            by_check[violation.check] += 1
            if by_check[violation.check] <= MAX_ROWS_SHOWN:
                print(violation, file=out)
        summary = ", ".join(f"{check}: {n}" for check, n in sorted(by_check.items()))
        print(f"FAILED: {len(result.violations)} violation(s) ({summary})", file=out)
        return 1
    print(f"shards: {shards}", file=out)
    print(
        f"tours: {result.tours}  capacity: {result.capacity}  "
        f"seats available: {result.seats_available}",
        file=out,
    )
    for status in ("pending", "confirmed", "cancelled", "expired"):
        count, seats = result.bookings.get(status, [0, 0])
        print(f"bookings {status:<10} {count:>8}  seats {seats:>8}", file=out)
    payments = "  ".join(f"{s}: {n}" for s, n in sorted(result.payments.items())) or "none"
    print(f"payments: {payments}", file=out)
    print("OK: all invariants hold", file=out)
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stack-env",
        type=Path,
        default=DEFAULT_STACK_ENV,
        help=f"the stack's env file, used when the environment names no database "
        f"(default {DEFAULT_STACK_ENV})",
    )
    args = parser.parse_args(argv)
    import django
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import DatabaseError

    try:
        databases = database_settings(audit_environment(env, args.stack_env))
    except (NothingToAudit, ImproperlyConfigured) as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    if not settings.configured:
        settings.configure(DATABASES=databases, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
    aliases = [alias for alias in databases if alias != "default"]
    try:
        result = audit(aliases)
    except DatabaseError as exc:
        print(f"verify: cannot read the shards: {exc}".strip(), file=sys.stderr)
        return 2
    return report(result, len(aliases))


if __name__ == "__main__":
    sys.exit(main())
