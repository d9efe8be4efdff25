"""`python -m loadtest.verify` finds each kind of broken invariant and exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.backend.bookings_support import (  # noqa: F401
    Stack,
    book,
    booking_stack_fixture,
    request,
    verify,
)

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


def test_verify_passes_on_healthy_data_with_a_summary(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=4, shard=1)
    (user,) = stack.users(1)
    book(stack, user, tour, 2)
    done = verify(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: all invariants hold" in done.stdout
    assert "shards: 2" in done.stdout and "bookings pending" in done.stdout


def test_verify_detects_corruption_and_prints_the_rows(booking_stack: Stack) -> None:
    stack = booking_stack
    tour = stack.tour(capacity=10, shard=0)
    shard = stack.shard_of(tour)
    alice, bob = stack.users(2)
    paid_id = book(stack, alice, tour, 2).body["id"]
    request(
        stack,
        "POST",
        f"/api/bookings/{paid_id}/pay/",
        user=alice,
        json_body={"card_number": "4242424242424242"},
    )
    pending_id = book(stack, bob, tour, 1).body["id"]
    try:
        # an oversell: the seat count no longer matches the bookings
        stack.sql(shard, "UPDATE tours_tour SET seats_available = 1 WHERE id = %s", [tour])
        # a second active booking for the same user and tour (bypassing the unique index)
        stack.sql(shard, "DROP INDEX IF EXISTS booking_one_active_per_user_tour")
        stack.sql(
            shard,
            "INSERT INTO bookings_booking (id, tour_id, user_id, seats, status, total_price, "
            "hold_expires_at, created_at, updated_at) SELECT %s, tour_id, user_id, seats, "
            "'pending', total_price, hold_expires_at, now(), now() FROM bookings_booking "
            "WHERE id = %s",
            [uuid.uuid4(), pending_id],
        )
        # a confirmed booking whose payment vanished
        stack.sql(shard, "DELETE FROM payments_payment WHERE booking_id = %s", [paid_id])

        done = verify(stack)

        assert done.returncode == 1, done.stdout
        assert f"VIOLATION [seats] on shard_{shard}: tour={tour}" in done.stdout
        assert f"VIOLATION [active] on shard_{shard}: user_id={bob.id}" in done.stdout
        assert f"VIOLATION [paid] on shard_{shard}: booking={paid_id}" in done.stdout
        assert "FAILED" in done.stdout
    finally:
        # put the shared stack back as it was, for the tests that audit after this one
        stack.sql(
            shard,
            "DELETE FROM bookings_booking WHERE tour_id = %s AND user_id = %s AND id <> %s",
            [tour, bob.id, pending_id],
        )
        stack.sql(
            shard,
            "CREATE UNIQUE INDEX IF NOT EXISTS booking_one_active_per_user_tour "
            "ON bookings_booking (user_id, tour_id) WHERE status IN ('pending', 'confirmed')",
        )
        stack.sql(
            shard,
            "UPDATE bookings_booking SET status = 'cancelled' WHERE id = %s",
            [paid_id],
        )
        stack.sql(shard, "UPDATE tours_tour SET seats_available = 9 WHERE id = %s", [tour])
    assert verify(stack).returncode == 0


def test_verify_detects_one_key_making_two_bookings(booking_stack: Stack) -> None:
    stack = booking_stack
    tours = [stack.tour(capacity=5, shard=0), stack.tour(capacity=5, shard=1)]
    (user,) = stack.users(1)
    ids = [book(stack, user, t, 1).body["id"] for t in tours]
    try:
        for t, booking_id in zip(tours, ids, strict=True):
            stack.sql(
                stack.shard_of(t),
                "UPDATE bookings_booking SET idempotency_key = 'same' WHERE id = %s",
                [booking_id],
            )
        done = verify(stack)
        assert done.returncode == 1
        assert "VIOLATION [idempotency] on shard_0,shard_1" in done.stdout
        assert f"user_id={user.id}, key=same" in done.stdout
    finally:
        for t in tours:
            stack.sql(
                stack.shard_of(t),
                "UPDATE bookings_booking SET idempotency_key = NULL WHERE tour_id = %s",
                [t],
            )
    assert verify(stack).returncode == 0


def test_verify_exits_2_when_a_shard_cannot_be_read(booking_stack: Stack) -> None:
    env = {**booking_stack.env, "SHARD_URLS": "postgresql://postgres@127.0.0.1:1/nothing"}
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.verify"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "cannot read" in done.stderr
