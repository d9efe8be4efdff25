"""The cache's part of /status: the workers' caches summed, a hit ratio, an HTML section."""

from __future__ import annotations

from lb.status import StatusBoard, render_html


def snap(pid: int, hits: int, misses: int, held: int) -> dict[str, object]:
    return {
        "pid": pid,
        "backends": [],
        "cache": {
            "max_bytes": 1000,
            "bytes": held,
            "entries": 2,
            "keys": 2,
            "evicted": 1,
            "purged": 0,
            "in_flight": 0,
            "lock_timeouts": 0,
            "results": {"hit": hits, "miss": misses, "coalesced": 1},
            "purges": {"redis": 1},
            "subscriber": "subscribed",
        },
    }


def test_workers_caches_are_summed_with_a_hit_ratio() -> None:
    status = StatusBoard().combine([snap(1, 6, 2, 300), snap(2, 0, 1, 200)])
    cache = status["cache"]
    assert cache["workers"] == 2 and cache["bytes"] == 500 and cache["max_bytes"] == 2000
    assert cache["results"] == {"hit": 6, "miss": 3, "coalesced": 2}
    assert cache["hit_ratio"] == round(8 / 11, 4)
    assert cache["purges"] == {"redis": 2} and cache["subscribers"] == ["subscribed"]
    page = render_html(status)
    assert "hit ratio 72.7%" in page and "subscribed" in page


def test_no_cache_says_off() -> None:
    status = StatusBoard().combine([{"pid": 1, "backends": []}])
    assert status["cache"] is None
    assert "off (LB_CACHE_BYTES=0)" in render_html(status)
