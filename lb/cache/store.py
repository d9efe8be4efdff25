"""One worker's cache memory: entries by key and variant, LRU, bounded in bytes, tag purges.

An entry's size counts its key, its rendered head, its body, its tags and a fixed estimate of
the Python objects around them, so `bytes` never passes the budget (LB_CACHE_BYTES). Whole
slots (a key with all its Vary variants) are evicted least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Final

from lb.cache.policy import Freshness, RawHeaders, variant

# what the dataclasses, dict slots and LRU links around an entry / a key cost (measured
# with sys.getsizeof on CPython 3.11, rounded up)
ENTRY_OVERHEAD: Final = 512
SLOT_OVERHEAD: Final = 256
PURGE_LOG: Final = 4096  # purges remembered for fills still in flight


@dataclass(slots=True)
class Entry:
    """One stored response: its head rendered once (status line and stored headers, with
    Content-Length), its body, and when it was stored."""

    status: int
    head: bytes
    body: bytes
    freshness: Freshness
    stored_at: float
    tags: frozenset[str] = frozenset()
    variant: tuple[str, ...] = ()
    size: int = 0

    def age(self, now: float) -> float:
        return self.freshness.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.freshness.lifetime

    def within_revalidate(self, now: float) -> bool:
        f = self.freshness
        return self.age(now) < f.lifetime + f.while_revalidate

    def within_error(self, now: float) -> bool:
        f = self.freshness
        return self.age(now) < f.lifetime + f.if_error

    def dead(self, now: float) -> bool:
        return self.age(now) >= self.freshness.keep_for


@dataclass(slots=True)
class Slot:
    """A key: the Vary names of its last response, its variants, a hit-for-miss marker."""

    key: str
    vary: tuple[str, ...] = ()
    variants: dict[tuple[str, ...], Entry] = field(default_factory=dict)
    pass_until: float = 0.0  # until then the key is known uncacheable: nobody waits for it
    size: int = 0


class Store:
    """The LRU byte-bounded map. Time comes from `clock` (the event loop's)."""

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.evicted = 0
        self.purged = 0
        self._slots: OrderedDict[str, Slot] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self.purge_seq = 0
        self._purges: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=PURGE_LOG)

    def __len__(self) -> int:
        return sum(len(slot.variants) for slot in self._slots.values())

    @property
    def keys(self) -> int:
        return len(self._slots)

    # -- reading -------------------------------------------------------------------------------

    def get(self, key: str, request_headers: RawHeaders) -> Entry | None:
        """The entry for this request's variant, if any (fresh or not: the caller judges)."""
        slot = self._slots.get(key)
        if slot is None or not slot.variants:
            return None
        entry = slot.variants.get(variant(request_headers, slot.vary))
        if entry is None:
            return None
        if entry.dead(self.clock()):
            self._drop_variant(slot, entry)
            return None
        self._slots.move_to_end(key)
        return entry

    def passing(self, key: str) -> bool:
        """Is the key marked uncacheable (hit-for-miss)?"""
        slot = self._slots.get(key)
        return slot is not None and slot.pass_until > self.clock()

    # -- writing -------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        vary: tuple[str, ...],
        request_headers: RawHeaders,
        entry: Entry,
    ) -> bool:
        """Store `entry` as this request's variant; False when it cannot fit at all."""
        entry.variant = variant(request_headers, vary)
        entry.size = (
            ENTRY_OVERHEAD
            + len(entry.head)
            + len(entry.body)
            + sum(len(t) for t in entry.tags)
            + sum(len(v) for v in entry.variant)
        )
        if entry.size + SLOT_OVERHEAD + len(key) > self.max_bytes:
            return False
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = Slot(key, size=SLOT_OVERHEAD + len(key))
            self.bytes += slot.size
        if slot.vary != vary:
            for old in list(slot.variants.values()):  # other Vary fields: old variants are moot
                self._drop_variant(slot, old)
            slot.vary = vary
        previous = slot.variants.get(entry.variant)
        if previous is not None:
            self._drop_variant(slot, previous)
        slot.variants[entry.variant] = entry
        slot.size += entry.size
        slot.pass_until = 0.0
        self.bytes += entry.size
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(key)
        self._slots.move_to_end(key)
        self._evict(keep=key)
        return True

    def mark_pass(self, key: str, seconds: float) -> None:
        """Remember for a while that this key's answers are not cacheable."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = Slot(key, size=SLOT_OVERHEAD + len(key))
            self.bytes += slot.size
        slot.pass_until = self.clock() + seconds
        self._slots.move_to_end(key)
        self._evict(keep=key)

    def purge(self, tags: Iterable[str]) -> int:
        """Drop every entry carrying any of `tags`; the number of keys dropped."""
        tagset = frozenset(tags)
        self.purge_seq += 1
        self._purges.append((self.purge_seq, tagset))
        keys: set[str] = set()
        for tag in tagset:
            keys |= self._tags.get(tag, set())
        for key in keys:
            slot = self._slots.get(key)
            if slot is not None:
                self._drop_slot(slot)
        self.purged += len(keys)
        return len(keys)

    def clear(self) -> None:
        """Drop everything (e.g. purge messages may have been missed)."""
        self.purge_seq += 1
        self._purges.append((self.purge_seq, None))
        self.purged += len(self._slots)
        self._slots.clear()
        self._tags.clear()
        self.bytes = 0

    def purged_since(self, seq: int, tags: frozenset[str]) -> bool:
        """Did a purge after `seq` name one of `tags` (or everything)? Decides whether a
        response fetched before that purge may still be stored."""
        if seq == self.purge_seq:
            return False
        purges = self._purges
        if not purges or purges[0][0] > seq + 1:
            return True  # forgotten: assume the worst
        for number, named in reversed(purges):
            if number <= seq:
                break
            if named is None or named & tags:
                return True
        return False

    def sweep(self, limit: int = 1000) -> int:
        """Drop dead entries among the `limit` least recently used keys; how many went."""
        now = self.clock()
        dropped = 0
        for slot in list(islice(self._slots.values(), limit)):
            for entry in list(slot.variants.values()):
                if entry.dead(now):
                    self._drop_variant(slot, entry)
                    dropped += 1
            if not slot.variants and slot.pass_until <= now:
                self._drop_slot(slot)
        return dropped

    # -- internals -----------------------------------------------------------------------------

    def _evict(self, keep: str) -> None:
        slots = self._slots
        while self.bytes > self.max_bytes and slots:
            key = next(iter(slots))
            if key == keep:
                if len(slots) == 1:
                    break
                slots.move_to_end(key)
                continue
            self._drop_slot(slots[key])
            self.evicted += 1

    def _drop_variant(self, slot: Slot, entry: Entry) -> None:
        if slot.variants.get(entry.variant) is entry:
            del slot.variants[entry.variant]
            slot.size -= entry.size
            self.bytes -= entry.size
            self._untag(slot.key, entry.tags, slot)

    def _drop_slot(self, slot: Slot) -> None:
        if self._slots.get(slot.key) is not slot:
            return
        del self._slots[slot.key]
        self.bytes -= slot.size
        for entry in slot.variants.values():
            self._untag(slot.key, entry.tags, None)
        slot.variants.clear()

    def _untag(self, key: str, tags: frozenset[str], slot: Slot | None) -> None:
        still = set() if slot is None else {t for e in slot.variants.values() for t in e.tags}
        for tag in tags - still:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]
