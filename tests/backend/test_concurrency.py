"""Concurrency over real HTTP to 2 gunicorn replicas on real PostgreSQL: never oversell."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiohttp
import pytest

from tests.backend.bookings_support import Stack, booking_stack_fixture, call, verify  # noqa: F401

pytestmark = [pytest.mark.postgres, pytest.mark.processes, pytest.mark.slow]


async def _book_all(stack: Stack, attempts: list[tuple[object, str, int]]) -> list:
    connector = aiohttp.TCPConnector(limit=200)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        jobs = [
            call(
                session,
                "POST",
                f"{stack.urls[i % len(stack.urls)]}/api/bookings/",
                user=user,
                json_body={"tour": tour, "seats": seats},
            )
            for i, (user, tour, seats) in enumerate(attempts)
        ]
        return await asyncio.gather(*jobs)


def test_500_concurrent_bookings_never_oversell_50_seats(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=50, shard=1)
    users = stack.users(500)
    rng = random.Random(4)
    attempts = [(user, tour, rng.randint(1, 4)) for user in users]

    replies = asyncio.run(_book_all(stack, attempts))

    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {201, 409}, statuses
    assert all(r.body["code"] == "sold_out" for r in replies if r.status == 409)
    sold = sum(r.body["seats"] for r in replies if r.status == 201)
    row = stack.tour_row(tour)
    assert sold <= 50
    assert row["seats_available"] == 50 - sold >= 0
    # the tour was sold to the last seat (or to fewer seats than the smallest request left)
    assert row["seats_available"] < 4
    db_sold = stack.sql(
        stack.shard_of(tour),
        "SELECT COALESCE(SUM(seats), 0), COUNT(*) FROM bookings_booking "
        "WHERE tour_id = %s AND status = 'pending'",
        [tour],
    )[0]
    assert (int(db_sold[0]), db_sold[1]) == (sold, statuses[201])
    audit = verify(stack)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_one_user_racing_20_bookings_gets_exactly_one(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=100, shard=0)
    (user,) = stack.users(1)

    replies = asyncio.run(_book_all(stack, [(user, tour, 1)] * 20))

    statuses = Counter(r.status for r in replies)
    assert statuses == {201: 1, 409: 19}, statuses
    assert {r.body["code"] for r in replies if r.status == 409} == {"already_booked"}
    active = stack.sql(
        stack.shard_of(tour),
        "SELECT COUNT(*) FROM bookings_booking WHERE tour_id = %s AND user_id = %s "
        "AND status IN ('pending', 'confirmed')",
        [tour, user.id],
    )[0][0]
    assert active == 1
    assert stack.tour_row(tour)["seats_available"] == 99
