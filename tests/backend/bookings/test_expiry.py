"""Hold expiry: `python -m backend expire_holds` releases unpaid holds' seats, exactly once."""

from __future__ import annotations

import time

import pytest

from tests.backend.bookings_support import Stack, book, booking_stack_fixture, request  # noqa: F401
from tests.support.processes import Process, python

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


def age_hold(stack: Stack, tour: str, booking_id: str) -> None:
    """Move a hold's expiry into the past: time passes in the data, not in a sleep."""
    stack.sql(
        stack.shard_of(tour),
        "UPDATE bookings_booking SET hold_expires_at = now() - interval '1 second' WHERE id = %s",
        [booking_id],
    )


def test_expire_holds_releases_seats_once(booking_stack: Stack) -> None:
    stack = booking_stack
    tours = [stack.tour(capacity=10, shard=0), stack.tour(capacity=10, shard=1)]
    users = stack.users(4)
    stale = [book(stack, users[i], tours[i % 2], 3).body["id"] for i in range(2)]
    fresh = book(stack, users[2], tours[0], 2).body["id"]
    paid = book(stack, users[3], tours[1], 1).body["id"]
    request(
        stack,
        "POST",
        f"/api/bookings/{paid}/pay/",
        user=users[3],
        json_body={"card_number": "4242424242424242"},
    )
    for i, booking_id in enumerate(stale):
        age_hold(stack, tours[i % 2], booking_id)
    age_hold(stack, tours[1], paid)  # a confirmed booking's old hold time means nothing

    first = stack.run("backend", "expire_holds")
    second = stack.run("backend", "expire_holds")

    assert first.returncode == 0, first.stderr
    assert "expired 2 booking(s)" in first.stdout
    assert "expired 0 booking(s)" in second.stdout
    assert stack.tour_row(tours[0])["seats_available"] == 8  # only the fresh hold remains
    assert stack.tour_row(tours[1])["seats_available"] == 9  # only the paid booking remains
    statuses = {
        b: request(stack, "GET", f"/api/bookings/{b}/", user=users[i]).body["status"]
        for i, b in enumerate([*stale, fresh, paid])
    }
    assert list(statuses.values()) == ["expired", "expired", "pending", "confirmed"]
    events = stack.sql(
        stack.shard_of(tours[0]),
        "SELECT from_status, to_status, actor_id FROM bookings_bookingevent "
        "WHERE booking_id = %s ORDER BY id",
        [stale[0]],
    )
    assert events[-1] == ("pending", "expired", None)
    # an expired hold frees the user to book the tour again, and can't be cancelled into seats
    again = request(stack, "POST", f"/api/bookings/{stale[0]}/cancel/", user=users[0])
    assert again.body["status"] == "expired"
    assert stack.tour_row(tours[0])["seats_available"] == 8
    assert book(stack, users[0], tours[0], 1).status == 201


def test_expire_holds_rejects_a_bad_batch(booking_stack: Stack) -> None:
    done = booking_stack.run("backend", "expire_holds", "--batch", "0")
    assert done.returncode != 0
    assert "--batch" in done.stderr


def test_expire_holds_every_keeps_sweeping_until_sigterm(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=6)
    (user,) = stack.users(1)
    booking_id = book(stack, user, tour, 2).body["id"]
    sweeper = Process(
        python("-m", "backend", "expire_holds", "--every", "0.2"),
        log_path=stack.work / "expire-every.log",
        env=stack.env,
    ).start()
    try:
        time.sleep(0.5)
        assert stack.tour_row(tour)["seats_available"] == 4  # the hold is still valid
        age_hold(stack, tour, booking_id)
        deadline = time.monotonic() + 20
        while stack.tour_row(tour)["seats_available"] != 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stack.tour_row(tour)["seats_available"] == 6
        assert sweeper.alive()
    finally:
        code = sweeper.stop(timeout=10)
    assert code == 0, sweeper.log()
