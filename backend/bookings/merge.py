"""Several shards' newest-first querysets as one newest-first sequence, read page by page (pure)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any


def _newest_first(row: Any) -> tuple[Any, str]:
    return (row.created_at, str(row.pk))


class MergedBookings:
    """What Django's Paginator needs: `count()` (a COUNT per shard) and slicing, which reads at
    most `stop` rows from each shard and merges them by (created_at, id), newest first.
    """

    def __init__(self, querysets: Sequence[Any]) -> None:
        self._querysets = [qs.order_by("-created_at", "-id") for qs in querysets]
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            self._count = sum(qs.count() for qs in self._querysets)
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: slice | int) -> Any:
        if isinstance(index, int):
            return self[index : index + 1][0]
        start, stop = index.start or 0, index.stop
        if stop is None:
            stop = self.count()
        if stop <= start:
            return []
        per_shard = [list(qs[:stop]) for qs in self._querysets]
        merged = heapq.merge(*per_shard, key=_newest_first, reverse=True)
        return list(merged)[start:stop]
