"""The cache memory (lb/cache/store.py): byte bound, LRU, variants, tags, hit-for-miss."""

from __future__ import annotations

from lb.cache.policy import Freshness
from lb.cache.store import ENTRY_OVERHEAD, SLOT_OVERHEAD, Entry, Store
from tests.support.clock import FakeClock

FOREVER = Freshness(lifetime=60, while_revalidate=0, if_error=0, initial_age=0)


def entry(
    clock: FakeClock,
    body: bytes = b"x" * 100,
    tags: frozenset[str] = frozenset(),
    freshness: Freshness = FOREVER,
) -> Entry:
    return Entry(200, b"HTTP/1.1 200 OK\r\n", body, freshness, clock(), tags)


def test_size_counts_key_head_body_tags_and_overhead() -> None:
    clock = FakeClock()
    store = Store(100_000, clock)
    e = entry(clock, tags=frozenset({"tours"}))
    assert store.put("k", (), [], e)
    assert e.size == ENTRY_OVERHEAD + len(e.head) + 100 + len("tours")
    assert store.bytes == e.size + SLOT_OVERHEAD + len("k")


def test_a_stream_of_distinct_keys_never_passes_the_budget_and_evicts_lru() -> None:
    clock = FakeClock()
    store = Store(20_000, clock)
    for i in range(500):
        store.put(f"key-{i}", (), [], entry(clock))
        assert store.bytes <= 20_000
        if i == 3:
            assert store.get("key-0", []) is not None  # key-0 becomes recently used
    assert store.evicted > 0
    assert store.get("key-499", []) is not None
    assert store.get("key-1", []) is None  # the least recently used went first


def test_an_entry_larger_than_the_whole_budget_is_refused() -> None:
    clock = FakeClock()
    store = Store(1000, clock)
    assert not store.put("k", (), [], entry(clock, body=b"x" * 2000))
    assert store.bytes == 0


def test_variants_by_vary_values_and_a_changed_vary_drops_the_old_ones() -> None:
    clock = FakeClock()
    store = Store(100_000, clock)
    en = [(b"Accept-Language", b"en")]
    fr = [(b"Accept-Language", b"fr")]
    store.put("k", ("accept-language",), en, entry(clock, body=b"en"))
    store.put("k", ("accept-language",), fr, entry(clock, body=b"fr"))
    assert store.get("k", en).body == b"en"  # type: ignore[union-attr]
    assert store.get("k", fr).body == b"fr"  # type: ignore[union-attr]
    assert store.get("k", []) is None
    store.put("k", (), [], entry(clock, body=b"any"))
    assert len(store) == 1 and store.get("k", en).body == b"any"  # type: ignore[union-attr]


def test_purge_by_tag_and_fills_fetched_before_a_purge() -> None:
    clock = FakeClock()
    store = Store(100_000, clock)
    store.put("a", (), [], entry(clock, tags=frozenset({"tours", "tour:a"})))
    store.put("b", (), [], entry(clock, tags=frozenset({"tours", "tour:b"})))
    seq = store.purge_seq
    assert store.purge({"tour:a"}) == 1
    assert store.get("a", []) is None and store.get("b", []) is not None
    assert store.purged_since(seq, frozenset({"tour:a"}))
    assert not store.purged_since(seq, frozenset({"tour:b"}))
    assert not store.purged_since(store.purge_seq, frozenset({"tour:a"}))
    store.purge({"tours"})
    assert store.bytes == 0 and store.keys == 0
    store.clear()
    assert store.purged_since(seq, frozenset({"anything"}))


def test_dead_entries_go_on_lookup_and_on_sweep() -> None:
    clock = FakeClock()
    store = Store(100_000, clock)
    short = Freshness(lifetime=1, while_revalidate=2, if_error=5, initial_age=0)
    store.put("a", (), [], entry(clock, freshness=short))
    store.put("b", (), [], entry(clock, freshness=short))
    clock.advance(3)
    e = store.get("a", [])
    assert e is not None and not e.fresh(clock()) and not e.within_revalidate(clock())
    assert e.within_error(clock()) and int(e.age(clock())) == 3
    clock.advance(3)
    assert store.get("a", []) is None
    assert store.sweep() == 1
    assert store.bytes == 0


def test_hit_for_miss_markers_expire() -> None:
    clock = FakeClock()
    store = Store(100_000, clock)
    store.mark_pass("k", 10)
    assert store.passing("k")
    clock.advance(11)
    assert not store.passing("k")
    store.mark_pass("k", 10)
    store.put("k", (), [], entry(clock))
    assert not store.passing("k")  # a cacheable answer replaces the marker
