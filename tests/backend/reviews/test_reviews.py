"""Reviews: public list; only guests with a confirmed booking; one per user; tour rating kept."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import aiohttp
import pytest

from tests.backend.bookings_support import (  # noqa: F401
    Stack,
    User,
    book,
    booking_stack_fixture,
    call,
    request,
)

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


def guest(stack: Stack, user: User, tour: str) -> None:
    booking_id = book(stack, user, tour, 1).body["id"]
    paid = request(
        stack,
        "POST",
        f"/api/bookings/{booking_id}/pay/",
        user=user,
        json_body={"card_number": "4242424242424242"},
    )
    assert paid.body["status"] == "confirmed"


def review(stack: Stack, user: User | None, tour: str, body: object):
    return request(stack, "POST", f"/api/tours/{tour}/reviews/", user=user, json_body=body)


def test_review_rules(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=10, shard=1)
    alice, bob, carol = stack.users(3)
    guest(stack, alice, tour)
    book(stack, bob, tour, 1)  # pending only: not a guest yet

    assert review(stack, None, tour, {"rating": 5}).status == 401
    not_guest = review(stack, bob, tour, {"rating": 5})
    assert (not_guest.status, not_guest.body["code"]) == (403, "no_confirmed_booking")
    stranger = review(stack, carol, tour, {"rating": 5})
    assert stranger.status == 403
    for bad in ({"rating": 0}, {"rating": 6}, {"rating": "great"}, {}):
        reply = review(stack, alice, tour, bad)
        assert reply.status == 400 and "rating" in reply.body["errors"], bad

    created = review(stack, alice, tour, {"rating": 4, "comment": "Lovely views"})
    assert created.status == 201
    assert (created.body["rating"], created.body["author"]) == (4, alice.username)
    twice = review(stack, alice, tour, {"rating": 1})
    assert (twice.status, twice.body["code"]) == (409, "already_reviewed")

    listed = request(stack, "GET", f"/api/tours/{tour}/reviews/")
    assert listed.status == 200 and listed.body["count"] == 1
    assert listed.body["results"][0]["comment"] == "Lovely views"
    row = stack.tour_row(tour)
    assert (row["rating"], row["rating_count"]) == (Decimal("4.00"), 1)
    missing = request(stack, "GET", f"/api/tours/{uuid.uuid4()}/reviews/")
    assert missing.status == 404


def test_concurrent_reviews_keep_an_exact_rating(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=20)
    users = stack.users(8)
    for user in users:
        guest(stack, user, tour)
    ratings = [5, 4, 4, 3, 5, 2, 5, 1]

    async def all_at_once() -> list:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(
                *(
                    call(
                        session,
                        "POST",
                        f"{stack.urls[i % 2]}/api/tours/{tour}/reviews/",
                        user=user,
                        json_body={"rating": r},
                    )
                    for i, (user, r) in enumerate(zip(users, ratings, strict=True))
                )
            )

    replies = asyncio.run(all_at_once())

    assert [r.status for r in replies] == [201] * 8
    row = stack.tour_row(tour)
    assert row["rating_count"] == 8
    # 29 / 8 = 3.625, rounded half up to two places
    assert row["rating"] == Decimal("3.63")
