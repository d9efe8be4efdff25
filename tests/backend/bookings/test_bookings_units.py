"""Pure pieces of bookings and payments: shard-tagged ids, request fingerprints, lock ids, the
card checks and the fake gateway, the newest-first merge of shard pages. No database."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from decimal import Decimal

import pytest

from backend.bookings.idempotency import lock_id, request_fingerprint
from backend.bookings.ids import logical_shard_of, new_booking_id
from backend.payments.gateway import (
    APPROVE_CARD,
    DECLINE_CARD,
    INSUFFICIENT_FUNDS_CARD,
    Card,
    FakeGateway,
)


def counter_bytes(n: int) -> bytes:
    return bytes([0xAB] * n)


@pytest.mark.parametrize("shard", [0, 1, 37, 63, 255])
def test_booking_id_carries_its_logical_shard(shard: int) -> None:
    booking_id = new_booking_id(shard)
    assert logical_shard_of(booking_id) == shard
    assert booking_id.version == 4
    assert logical_shard_of(uuid.UUID(str(booking_id))) == shard


def test_booking_ids_are_random_apart_from_the_shard_byte() -> None:
    fixed = new_booking_id(5, randbytes=counter_bytes)
    assert fixed.bytes[0] == 5 and fixed.bytes[1:6] == bytes([0xAB] * 5)
    assert len({new_booking_id(5) for _ in range(1000)}) == 1000
    with pytest.raises(ValueError):
        new_booking_id(256)


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    a = request_fingerprint("post", "/api/bookings/", {"tour": "t", "seats": 2})
    b = request_fingerprint("POST", "/api/bookings/", {"seats": 2, "tour": "t"})
    c = request_fingerprint("POST", "/api/bookings/", {"seats": 3, "tour": "t"})
    assert a == b != c


def test_lock_ids_are_signed_64_bit_and_per_user() -> None:
    ids = {lock_id(user, key) for user, key in itertools.product(range(50), ["a", "b", "c"])}
    assert len(ids) == 150
    assert all(-(2**63) <= i < 2**63 for i in ids)
    assert lock_id(1, "k") == lock_id(1, "k")


def test_fake_gateway_approves_and_declines_the_documented_cards() -> None:
    gateway = FakeGateway()
    ok = gateway.charge(
        amount=Decimal("10"), currency="EUR", card=Card(APPROVE_CARD), idempotency_key="b1"
    )
    again = gateway.charge(
        amount=Decimal("10"), currency="EUR", card=Card(APPROVE_CARD), idempotency_key="b1"
    )
    declined = gateway.charge(
        amount=Decimal("10"), currency="EUR", card=Card(DECLINE_CARD), idempotency_key="b2"
    )
    poor = gateway.charge(
        amount=Decimal("10"),
        currency="EUR",
        card=Card(INSUFFICIENT_FUNDS_CARD),
        idempotency_key="b3",
    )
    assert ok.approved and ok.reference == again.reference
    assert (declined.approved, declined.decline_code) == (False, "card_declined")
    assert (poor.approved, poor.decline_code) == (False, "insufficient_funds")


def test_a_card_never_shows_its_number() -> None:
    card = Card(APPROVE_CARD, 12, 2030, "123")
    assert (card.last4, card.brand) == ("4242", "visa")
    assert APPROVE_CARD not in repr(card) and "123" not in repr(card)


def test_luhn() -> None:
    from backend.payments.serializers import luhn_ok

    assert luhn_ok(APPROVE_CARD) and luhn_ok(DECLINE_CARD)
    assert not luhn_ok("4242424242424241")


class FakeShardQuery:
    """Stands in for one shard's queryset: ordered rows, count() and slicing."""

    def __init__(self, rows: list[object]) -> None:
        self.rows = rows
        self.sliced: list[int] = []

    def order_by(self, *fields: str) -> FakeShardQuery:
        return self

    def count(self) -> int:
        return len(self.rows)

    def __getitem__(self, s: slice) -> list[object]:
        self.sliced.append(s.stop)
        return self.rows[s]


def test_merged_pages_are_newest_first_and_read_only_what_a_page_needs() -> None:
    from types import SimpleNamespace

    from backend.bookings.merge import MergedBookings

    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def rows(minutes: list[int]) -> list[object]:
        made = [
            SimpleNamespace(pk=f"{m:04d}", created_at=base + dt.timedelta(minutes=m))
            for m in minutes
        ]
        return sorted(made, key=lambda b: b.created_at, reverse=True)

    shard0, shard1 = FakeShardQuery(rows([1, 4, 5, 9])), FakeShardQuery(rows([2, 3, 8]))
    merged = MergedBookings([shard0, shard1])  # type: ignore[list-item]

    assert merged.count() == len(merged) == 7
    first = [b.pk for b in merged[0:3]]
    second = [b.pk for b in merged[3:6]]
    assert first == ["0009", "0008", "0005"]
    assert second == ["0004", "0003", "0002"]
    assert [b.pk for b in merged[6:9]] == ["0001"]
    assert shard0.sliced[:2] == [3, 6]  # page n reads at most n * size rows per shard
