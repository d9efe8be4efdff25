"""Partial fan-out reads (pure): a booking list without an unreachable shard stays consistent,
and every list says what it lacks in one shape."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from backend.bookings.merge import MergedBookings
from backend.common.errors import ShardUnavailable
from backend.sharding.partial import partial_fields


class Rows:
    def __init__(self, minutes: list[int]) -> None:
        base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.rows = sorted(
            (
                SimpleNamespace(pk=f"{m:04d}", created_at=base + dt.timedelta(minutes=m))
                for m in minutes
            ),
            key=lambda b: b.created_at,
            reverse=True,
        )

    def order_by(self, *fields: str) -> Rows:
        return self

    def count(self) -> int:
        return len(self.rows)

    def __getitem__(self, s: slice) -> list[object]:
        return self.rows[s]


def guard_down(*down: str):  # type: ignore[no-untyped-def]
    @contextlib.contextmanager
    def guard(alias: str) -> Iterator[None]:
        if alias in down:
            raise ShardUnavailable(alias)
        yield

    return guard


def test_an_unreachable_shard_is_left_out_of_both_count_and_rows() -> None:
    merged = MergedBookings(
        [Rows([1, 4]), Rows([2, 3, 8])], ["shard_0", "shard_1"], guard=guard_down("shard_1")
    )
    assert merged.count() == 2
    assert [b.pk for b in merged[0:10]] == ["0004", "0001"]
    assert merged.unavailable == ["shard_1"]


def test_no_shard_at_all_is_an_error_not_an_empty_list() -> None:
    merged = MergedBookings(
        [Rows([1]), Rows([2])], ["shard_0", "shard_1"], guard=guard_down("shard_0", "shard_1")
    )
    with pytest.raises(ShardUnavailable):
        merged.count()


def test_partial_fields_are_absent_when_whole_and_sorted_when_not() -> None:
    assert partial_fields([]) == ({}, {})
    body, headers = partial_fields(["shard_2", "shard_1"])
    assert body == {"partial": True, "unavailable_shards": ["shard_1", "shard_2"]}
    assert headers == {"X-Partial-Shards": "shard_1,shard_2", "Cache-Control": "no-store"}
