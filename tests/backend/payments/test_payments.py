"""Paying a booking over real HTTP: approve, decline, pay twice, cancelled/expired, email."""

from __future__ import annotations

import asyncio
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
    verify,
)

pytestmark = [pytest.mark.postgres, pytest.mark.processes]

APPROVE = "4242 4242 4242 4242"
DECLINE = "4000 0000 0000 0002"


def pay(stack: Stack, user: User, booking_id: str, card: str = APPROVE, **extra: object):
    return request(
        stack,
        "POST",
        f"/api/bookings/{booking_id}/pay/",
        user=user,
        json_body={"card_number": card, **extra},
    )


def payments(stack: Stack, tour: str, booking_id: str) -> list[tuple]:
    return stack.sql(
        stack.shard_of(tour),
        "SELECT status, card_last4, amount FROM payments_payment WHERE booking_id = %s "
        "ORDER BY created_at",
        [booking_id],
    )


def test_approved_card_confirms_and_records_last4_only(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=5, price="99.90")
    (user,) = stack.users(1)
    booking_id = book(stack, user, tour, 2).body["id"]

    reply = pay(stack, user, booking_id, exp_month=12, exp_year=2099, cvc="123")

    assert reply.status == 200, reply.body
    assert reply.body["status"] == "confirmed"
    assert payments(stack, tour, booking_id) == [("succeeded", "4242", Decimal("199.80"))]
    # the full card number is stored nowhere on the shard
    dump = stack.sql(stack.shard_of(tour), "SELECT row_to_json(p)::text FROM payments_payment p")
    assert not any("4242424242424242" in row[0] for row in dump)
    events = stack.sql(
        stack.shard_of(tour),
        "SELECT to_status FROM bookings_bookingevent WHERE booking_id = %s ORDER BY id",
        [booking_id],
    )
    assert events == [("pending",), ("confirmed",)]
    # the confirmation email went out through Django's mail backend after the commit
    mails = list((stack.work / "mail").glob("*.log")) if (stack.work / "mail").exists() else []
    assert any(booking_id in m.read_text() for m in mails)
    assert stack.tour_row(tour)["seats_available"] == 3


def test_declined_card_is_402_and_the_booking_stays_pending(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=5)
    (user,) = stack.users(1)
    booking_id = book(stack, user, tour, 1).body["id"]

    declined = pay(stack, user, booking_id, DECLINE)

    assert (declined.status, declined.body["code"]) == (402, "payment_declined")
    current = request(stack, "GET", f"/api/bookings/{booking_id}/", user=user).body
    assert current["status"] == "pending"
    assert stack.tour_row(tour)["seats_available"] == 4
    # a good card afterwards still works
    assert pay(stack, user, booking_id).body["status"] == "confirmed"
    assert [p[0] for p in payments(stack, tour, booking_id)] == ["declined", "succeeded"]


def test_paying_twice_charges_once(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=5)
    (user,) = stack.users(1)
    booking_id = book(stack, user, tour, 1).body["id"]

    first = pay(stack, user, booking_id)
    second = pay(stack, user, booking_id)

    assert first.status == second.status == 200
    assert first.body == second.body
    assert [p[0] for p in payments(stack, tour, booking_id)] == ["succeeded"]
    assert verify(stack).returncode == 0


def test_cancelled_and_expired_bookings_cannot_be_paid(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=5)
    alice, bob = stack.users(2)
    cancelled = book(stack, alice, tour, 1).body["id"]
    request(stack, "POST", f"/api/bookings/{cancelled}/cancel/", user=alice)
    stale = book(stack, bob, tour, 2).body["id"]
    assert stack.tour_row(tour)["seats_available"] == 3
    # the hold ran out (time passes in the data, not in a sleep)
    stack.sql(
        stack.shard_of(tour),
        "UPDATE bookings_booking SET hold_expires_at = now() - interval '1 second' WHERE id = %s",
        [stale],
    )

    after_cancel = pay(stack, alice, cancelled)
    after_expiry = pay(stack, bob, stale)
    again = pay(stack, bob, stale)

    assert (after_cancel.status, after_cancel.body["code"]) == (409, "booking_not_payable")
    assert (after_expiry.status, after_expiry.body["code"]) == (409, "booking_expired")
    assert (again.status, again.body["code"]) == (409, "booking_not_payable")
    assert request(stack, "GET", f"/api/bookings/{stale}/", user=bob).body["status"] == "expired"
    assert stack.tour_row(tour)["seats_available"] == 5  # the lazy expiry released the seats once
    assert payments(stack, tour, cancelled) == payments(stack, tour, stale) == []


def test_cancelling_a_paid_booking_refunds_and_returns_seats(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=5)
    (user,) = stack.users(1)
    booking_id = book(stack, user, tour, 3).body["id"]
    pay(stack, user, booking_id)

    reply = request(stack, "POST", f"/api/bookings/{booking_id}/cancel/", user=user)

    assert reply.body["status"] == "cancelled"
    assert [p[0] for p in payments(stack, tour, booking_id)] == ["refunded"]
    assert stack.tour_row(tour)["seats_available"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "card_number"),
        ({"card_number": "4242 4242 4242 4241"}, "card_number"),  # fails the Luhn check
        ({"card_number": "abcd"}, "card_number"),
        ({"card_number": APPROVE, "exp_month": 1, "exp_year": 2001}, "exp_year"),
        ({"card_number": APPROVE, "exp_month": 13, "exp_year": 2099}, "exp_month"),
    ],
)
def test_bad_card_input_is_400_and_charges_nothing(
    booking_stack: Stack, body: dict, field: str
) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=5)
    (user,) = stack.users(1)
    booking_id = book(stack, user, tour, 1).body["id"]
    reply = request(stack, "POST", f"/api/bookings/{booking_id}/pay/", user=user, json_body=body)
    assert reply.status == 400 and field in reply.body["errors"], reply.body
    assert payments(stack, tour, booking_id) == []


def test_parallel_pays_of_one_booking_charge_once(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=5)
    (user,) = stack.users(1)
    booking_id = book(stack, user, tour, 2).body["id"]

    async def all_at_once() -> list:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(
                *(
                    call(
                        session,
                        "POST",
                        f"{stack.urls[i % 2]}/api/bookings/{booking_id}/pay/",
                        user=user,
                        json_body={"card_number": APPROVE},
                    )
                    for i in range(10)
                )
            )

    replies = asyncio.run(all_at_once())

    assert [r.status for r in replies] == [200] * 10
    assert {r.body["status"] for r in replies} == {"confirmed"}
    assert [p[0] for p in payments(stack, tour, booking_id)] == ["succeeded"]
    assert stack.tour_row(tour)["seats_available"] == 3
