"""The booking API over real HTTP: create, validation, visibility, the merged list, cancel."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import requests

from tests.backend.bookings_support import (  # noqa: F401
    Stack,
    book,
    booking_stack_fixture,
    request,
)

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


def test_booking_holds_seats_as_pending_with_an_expiry(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=10, price="120.50")
    (user,) = stack.users(1)

    reply = book(stack, user, tour, 3)

    assert reply.status == 201, reply.body
    body = reply.body
    assert (body["tour"], body["user"], body["seats"]) == (tour, user.id, 3)
    assert (body["status"], body["total_price"]) == ("pending", "361.50")
    held = dt.datetime.fromisoformat(body["hold_expires_at"]) - dt.datetime.fromisoformat(
        body["created_at"]
    )
    assert held == dt.timedelta(seconds=600)  # BOOKING_HOLD_SECONDS default
    assert stack.tour_row(tour)["seats_available"] == 7
    events = stack.sql(
        stack.shard_of(tour),
        "SELECT from_status, to_status FROM bookings_bookingevent WHERE booking_id = %s",
        [body["id"]],
    )
    assert events == [("", "pending")]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"tour": "not-a-uuid", "seats": 1}, "tour"),
        ({"seats": 1}, "tour"),
        ({"tour": str(uuid.uuid4()), "seats": 0}, "seats"),
        ({"tour": str(uuid.uuid4()), "seats": 11}, "seats"),
        ({"tour": str(uuid.uuid4()), "seats": "many"}, "seats"),
    ],
)
def test_bad_bodies_get_400_naming_the_field(
    booking_stack: Stack, payload: dict, field: str
) -> None:
    (user,) = booking_stack.users(1)
    reply = request(booking_stack, "POST", "/api/bookings/", user=user, json_body=payload)
    assert reply.status == 400
    assert reply.body["code"] == "invalid" and field in reply.body["errors"]


def test_not_json_unknown_tour_started_tour_and_anonymous(booking_stack: Stack) -> None:
    stack = booking_stack
    (user,) = stack.users(1)
    garbage = request(
        stack, "POST", "/api/bookings/", user=user, headers={"Content-Type": "application/json"}
    )
    assert garbage.status == 400 and "detail" in garbage.body

    missing = book(stack, user, str(uuid.uuid4()), 1)
    assert (missing.status, missing.body["code"]) == (404, "not_found")

    started = stack.tour(capacity=5, starts_in_days=0)
    late = book(stack, user, started, 1)
    assert (late.status, late.body["code"]) == (409, "tour_started")
    assert stack.tour_row(started)["seats_available"] == 5

    anonymous = request(
        stack, "POST", "/api/bookings/", json_body={"tour": stack.tour(), "seats": 1}
    )
    assert anonymous.status == 401


def test_sold_out_and_already_booked(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=3)
    alice, bob = stack.users(2)
    assert book(stack, alice, tour, 2).status == 201
    again = book(stack, alice, tour, 1)
    assert (again.status, again.body["code"]) == (409, "already_booked")
    too_many = book(stack, bob, tour, 2)
    assert (too_many.status, too_many.body["code"]) == (409, "sold_out")
    assert book(stack, bob, tour, 1).status == 201
    assert stack.tour_row(tour)["seats_available"] == 0


def test_another_users_booking_is_404_staff_sees_it(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour()
    owner, stranger = stack.users(2)
    (staff,) = stack.users(1, staff=True)
    booking_id = book(stack, owner, tour, 1).body["id"]

    assert request(stack, "GET", f"/api/bookings/{booking_id}/", user=owner).status == 200
    for path in ("", "cancel/", "pay/"):
        method = "GET" if not path else "POST"
        reply = request(
            stack,
            method,
            f"/api/bookings/{booking_id}/{path}",
            user=stranger,
            json_body={"card_number": "4242424242424242"} if path == "pay/" else None,
        )
        assert (reply.status, reply.body["code"]) == (404, "not_found"), path
    assert request(stack, "GET", f"/api/bookings/{uuid.uuid4()}/", user=owner).status == 404
    seen = request(stack, "GET", f"/api/bookings/{booking_id}/", user=staff)
    assert seen.status == 200 and seen.body["user"] == owner.id
    assert stack.tour_row(tour)["seats_available"] == 9  # the stranger's cancel did nothing


def test_booking_list_merges_both_shards_newest_first(booking_stack: Stack) -> None:
    stack = booking_stack
    tours = [stack.tour(shard=i % 2) for i in range(5)]
    assert {stack.shard_of(t) for t in tours} == {0, 1}
    user, other = stack.users(2)
    made = [book(stack, user, tour, 1).body["id"] for tour in tours]
    book(stack, other, tours[0], 1)

    page1 = request(stack, "GET", "/api/bookings/?page_size=3", user=user)
    page2 = request(stack, "GET", "/api/bookings/?page_size=3&page=2", user=user)

    assert page1.status == 200 and page1.body["count"] == 5
    ids = [b["id"] for b in page1.body["results"] + page2.body["results"]]
    assert ids == list(reversed(made))  # newest first, across shards, nothing twice
    assert page1.body["next"] and page2.body["next"] is None
    assert {b["user"] for b in page1.body["results"] + page2.body["results"]} == {user.id}


def test_cancel_returns_seats_once_and_not_after_start(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=10)
    user, other = stack.users(2)
    (staff,) = stack.users(1, staff=True)
    booking_id = book(stack, user, tour, 4).body["id"]
    assert stack.tour_row(tour)["seats_available"] == 6

    first = request(stack, "POST", f"/api/bookings/{booking_id}/cancel/", user=user)
    second = request(stack, "POST", f"/api/bookings/{booking_id}/cancel/", user=user)

    assert first.status == second.status == 200
    assert first.body["status"] == second.body["status"] == "cancelled"
    assert stack.tour_row(tour)["seats_available"] == 10
    events = stack.sql(
        stack.shard_of(tour),
        "SELECT to_status FROM bookings_bookingevent WHERE booking_id = %s ORDER BY id",
        [booking_id],
    )
    assert events == [("pending",), ("cancelled",)]
    # a new booking is allowed after a cancel (one ACTIVE booking per user and tour)
    assert book(stack, user, tour, 1).status == 201

    # staff may cancel anyone's booking
    theirs = book(stack, other, tour, 2).body["id"]
    by_staff = request(stack, "POST", f"/api/bookings/{theirs}/cancel/", user=staff)
    assert by_staff.body["status"] == "cancelled"
    assert stack.tour_row(tour)["seats_available"] == 9

    # once the tour has started, cancelling is refused and nothing changes
    started = stack.tour(capacity=5)
    late_id = book(stack, user, started, 2).body["id"]
    stack.sql(
        stack.shard_of(started),
        "UPDATE tours_tour SET start_date = CURRENT_DATE, end_date = CURRENT_DATE WHERE id = %s",
        [started],
    )
    late = request(stack, "POST", f"/api/bookings/{late_id}/cancel/", user=user)
    assert (late.status, late.body["code"]) == (409, "tour_started")
    assert stack.tour_row(started)["seats_available"] == 3


def test_booking_outcomes_are_counted_in_metrics(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=1)
    alice, bob = stack.users(2)
    book(stack, alice, tour, 1)
    book(stack, bob, tour, 1)
    text = requests.get(f"{stack.url}/metrics", timeout=10).text
    assert 'backend_bookings_total{outcome="created"}' in text
    assert 'backend_bookings_total{outcome="sold_out"}' in text
