"""How a fan-out list says it lacks shards: body fields and a header (one shape for every list)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

PARTIAL_HEADER: Final = "X-Partial-Shards"


def partial_fields(unavailable: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(body fields, headers) of a list missing the shards in `unavailable`; whole: ({}, {}).

    `"partial": true` and `"unavailable_shards": [...]` in the body, `X-Partial-Shards:
    shard_1,...` for clients that only look at headers, and `Cache-Control: no-store`: a
    partial answer must not be kept by any cache on the way.
    """
    names = sorted(set(unavailable))
    if not names:
        return {}, {}
    headers = {PARTIAL_HEADER: ",".join(names), "Cache-Control": "no-store"}
    return {"partial": True, "unavailable_shards": names}, headers
