"""Several shards' newest-first querysets as one newest-first sequence, read page by page."""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Sequence
from typing import Any

from backend.common.errors import ShardUnavailable


def _newest_first(row: Any) -> tuple[Any, str]:
    return (row.created_at, str(row.pk))


def _unguarded(alias: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


class MergedBookings:
    """What Django's Paginator needs: `count()` (a COUNT per shard) and slicing, which reads at
    most `stop` rows from each shard and merges them by (created_at, id), newest first.

    With `aliases` and a `guard` (`on_shard`), a shard that cannot be reached is dropped and
    named in `unavailable`: count and rows then both come from the shards that answered, so
    the pages stay consistent. ShardUnavailable only when no shard answers.
    """

    def __init__(
        self,
        querysets: Sequence[Any],
        aliases: Sequence[str] | None = None,
        guard: Callable[[str], contextlib.AbstractContextManager[None]] = _unguarded,
    ) -> None:
        names = list(aliases) if aliases is not None else [str(i) for i in range(len(querysets))]
        self._querysets = {
            name: qs.order_by("-created_at", "-id")
            for name, qs in zip(names, querysets, strict=True)
        }
        self._guard = guard
        self._count: int | None = None
        self.unavailable: list[str] = []

    def _each(self, read: Callable[[Any], Any]) -> list[Any]:
        out = []
        for name, qs in list(self._querysets.items()):
            try:
                with self._guard(name):
                    out.append(read(qs))
            except ShardUnavailable:
                self.unavailable.append(name)
                del self._querysets[name]
        if not self._querysets and self.unavailable:
            raise ShardUnavailable(self.unavailable[0], "No shard database can be reached.")
        return out

    def count(self) -> int:
        if self._count is None:
            self._count = sum(self._each(lambda qs: qs.count()))
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
        per_shard = self._each(lambda qs: list(qs[:stop]))
        merged = heapq.merge(*per_shard, key=_newest_first, reverse=True)
        return list(merged)[start:stop]
