"""The bounded top-rejected list: fixed memory, and the heavy hitters always in it."""

from __future__ import annotations

import random

from lb.admission.heavy_hitters import HeavyHitters


def test_counts_exactly_while_there_is_room() -> None:
    hitters = HeavyHitters(10)
    for key, n in (("a", 5), ("b", 3), ("c", 8)):
        hitters.add(key, n)
    assert hitters.top(2) == [("c", 8), ("a", 5)]
    assert hitters.total == 16


def test_a_flood_of_distinct_clients_cannot_grow_it_or_hide_the_heavy_hitter() -> None:
    hitters = HeavyHitters(20)
    rng = random.Random(7)
    for i in range(50_000):
        hitters.add(f"198.51.{rng.randrange(256)}.{rng.randrange(256)}")
        if i % 10 == 0:
            hitters.add("203.0.113.66")  # one client rejected 5,000 times
    assert len(hitters) == 20
    top_key, top_count = hitters.top(1)[0]
    assert top_key == "203.0.113.66"
    # Space-Saving over-estimates by at most total / capacity
    assert 5000 <= top_count <= 5000 + hitters.total // 20


def test_top_of_nothing_is_empty() -> None:
    assert HeavyHitters().top(5) == []
    assert HeavyHitters().top(-1) == []
