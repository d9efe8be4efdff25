"""A bounded heavy-hitter list (Space-Saving): the most rejected clients in fixed memory."""

from __future__ import annotations


class HeavyHitters:
    """Counts at most `capacity` keys; a new key evicts the smallest and inherits its count.

    Space-Saving (Metwally et al.) guarantees that every key seen more than
    total/capacity times is in the list, and a listed count over-estimates the true one
    by at most the count it inherited. Memory stays fixed however many clients a flood
    brings, which is why clients never become Prometheus labels.
    """

    def __init__(self, capacity: int = 100) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._counts: dict[str, int] = {}
        self.total = 0

    def add(self, key: str, count: int = 1) -> None:
        self.total += count
        counts = self._counts
        if key in counts:
            counts[key] += count
        elif len(counts) < self.capacity:
            counts[key] = count
        else:
            victim = min(counts, key=counts.__getitem__)
            counts[key] = counts.pop(victim) + count

    def top(self, n: int) -> list[tuple[str, int]]:
        """The `n` keys with the highest counts, highest first (ties by key)."""
        ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        return ranked[: max(0, n)]

    def __len__(self) -> int:
        return len(self._counts)
