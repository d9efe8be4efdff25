"""Idempotency-Key on POST /api/bookings/: replay, 422 on a different body, 409 while running."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import aiohttp
import psycopg
import pytest

from backend.bookings.idempotency import lock_id
from tests.backend.bookings_support import (  # noqa: F401
    Reply,
    Stack,
    User,
    book,
    booking_stack_fixture,
    call,
    verify,
)

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


async def _same_key(
    stack: Stack, user: User, tour: str | list[str], key: str, n: int
) -> list[Reply]:
    tours = [tour] if isinstance(tour, str) else tour

    async def attempt(i: int, session: aiohttp.ClientSession) -> Reply:
        # a client retries "still running" (409) until the first request has finished
        for _ in range(200):
            reply = await call(
                session,
                "POST",
                f"{stack.urls[i % len(stack.urls)]}/api/bookings/",
                user=user,
                json_body={"tour": tours[i % len(tours)], "seats": 2},
                headers={"Idempotency-Key": key},
            )
            if not (reply.status == 409 and reply.body["code"] == "idempotency_in_progress"):
                return reply
            await asyncio.sleep(0.05)
        raise AssertionError("still in progress after 200 retries")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await asyncio.gather(*(attempt(i, session) for i in range(n)))


@pytest.mark.slow
def test_50_parallel_requests_with_one_key_make_one_booking(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=20, shard=1)
    (user,) = stack.users(1)
    key = f"key-{uuid.uuid4()}"

    replies = asyncio.run(_same_key(stack, user, tour, key, 50))

    assert Counter(r.status for r in replies) == {201: 50}
    assert all(r.body == replies[0].body for r in replies)
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies) == 49
    bookings = stack.sql(
        stack.shard_of(tour), "SELECT id FROM bookings_booking WHERE tour_id = %s", [tour]
    )
    assert [str(b[0]) for b in bookings] == [replies[0].body["id"]]
    assert stack.tour_row(tour)["seats_available"] == 18
    assert verify(stack).returncode == 0


def test_same_key_with_another_body_is_422_and_books_nothing(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=10)
    other_tour = stack.tour(capacity=10, shard=1)
    (user,) = stack.users(1)
    first = book(stack, user, tour, 1, headers={"Idempotency-Key": "abc"})
    assert first.status == 201

    changed_seats = book(stack, user, tour, 3, headers={"Idempotency-Key": "abc"})
    changed_tour = book(stack, user, other_tour, 1, headers={"Idempotency-Key": "abc"})

    assert (changed_seats.status, changed_seats.body["code"]) == (422, "idempotency_key_reused")
    assert (changed_tour.status, changed_tour.body["code"]) == (422, "idempotency_key_reused")
    assert stack.tour_row(tour)["seats_available"] == 9
    assert stack.tour_row(other_tour)["seats_available"] == 10
    # the key belongs to its user: another user's identical request is a booking of their own
    (other,) = stack.users(1)
    theirs = book(stack, other, tour, 1, headers={"Idempotency-Key": "abc"})
    assert theirs.status == 201 and theirs.body["id"] != first.body["id"]


def test_a_request_while_the_first_is_running_gets_409(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=10)
    (user,) = stack.users(1)
    key = "running-1"
    # stand in for a first request mid-flight: hold the key's lock on the tour's shard
    with psycopg.connect(stack.shard_urls[stack.shard_of(tour)], autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [lock_id(user.id, key)])
        busy = book(stack, user, tour, 1, headers={"Idempotency-Key": key})
        conn.execute("SELECT pg_advisory_unlock(%s)", [lock_id(user.id, key)])
    assert (busy.status, busy.body["code"]) == (409, "idempotency_in_progress")
    assert stack.tour_row(tour)["seats_available"] == 10
    done = book(stack, user, tour, 1, headers={"Idempotency-Key": key})
    assert done.status == 201


def test_bad_idempotency_key_is_400(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=10)
    (user,) = stack.users(1)
    reply = book(stack, user, tour, 1, headers={"Idempotency-Key": "x" * 300})
    assert reply.status == 400 and reply.body["code"] == "invalid"
    assert stack.tour_row(tour)["seats_available"] == 10


@pytest.mark.slow
def test_one_key_racing_for_tours_on_both_shards_books_once(booking_stack: Stack) -> None:
    stack = booking_stack
    tours = [stack.tour(capacity=10, shard=0), stack.tour(capacity=10, shard=1)]
    (user,) = stack.users(1)
    key = f"key-{uuid.uuid4()}"

    replies = asyncio.run(_same_key(stack, user, tours, key, 30))

    made = [
        row
        for i, tour in enumerate(tours)
        for row in stack.sql(i, "SELECT id FROM bookings_booking WHERE tour_id = %s", [tour])
    ]
    assert len(made) == 1  # one key, one booking, across shards
    winner = next(r for r in replies if r.status == 201)
    by_tour = {t: [r for i, r in enumerate(replies) if i % 2 == tours.index(t)] for t in tours}
    won = winner.body["tour"]
    lost = next(t for t in tours if t != won)
    assert all(r.status == 201 and r.body == winner.body for r in by_tour[won])
    assert all((r.status, r.body["code"]) == (422, "idempotency_key_reused") for r in by_tour[lost])
    assert verify(stack).returncode == 0
