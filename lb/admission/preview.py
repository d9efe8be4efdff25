"""What a proposed policy would have done to recent traffic: a replay of the arrival log (pure).

Each client's recorded arrivals (per second, method and path) are replayed in time order
through fresh leaky buckets of the proposed policy, the requests of one record spread evenly
between its first and last arrival (exact for steady traffic, close for the rest). Buckets
start empty at the start of the window, as after a quiet spell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lb.admission.bucket import Meter
from lb.admission.heavy_hitters import Arrival
from lb.admission.policy import Policy


def replay(arrivals: Mapping[str, Iterable[Arrival]], policy: Policy) -> dict[str, Any]:
    """How many requests and clients `policy` would have rejected among `arrivals`."""
    rules = policy.rule_set()
    requests = rejected = 0
    per_client: dict[str, int] = {}
    for client, entries in arrivals.items():
        times: list[tuple[float, str, str]] = []
        for _second, method, path, count, first, last in entries:
            step = (last - first) / (count - 1) if count > 1 else 0.0
            times.extend((first + i * step, method, path) for i in range(count))
        times.sort()
        meters: dict[str, Meter] = {}
        denied = 0
        for at, method, path in times:
            rule = rules.match(method, path)
            meter = meters.get(rule.name)
            if meter is None:
                meter = meters[rule.name] = Meter(0.0, at)
            if not meter.check(at, rule.capacity, rule.rate).allowed:
                denied += 1
        requests += len(times)
        rejected += denied
        if denied:
            per_client[client] = denied
    top = sorted(per_client.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {
        "requests": requests,
        "requests_rejected": rejected,
        "share_rejected": round(rejected / requests, 4) if requests else 0.0,
        "clients": len(arrivals),
        "clients_rejected": len(per_client),
        "top_rejected": [[client, count] for client, count in top],
    }


def merge(parts: Iterable[Mapping[str, Iterable[Arrival]]]) -> dict[str, list[Arrival]]:
    """Arrival records of several processes as one (a client may use every worker)."""
    merged: dict[str, list[Arrival]] = {}
    for part in parts:
        for client, entries in part.items():
            merged.setdefault(client, []).extend(tuple(e) for e in entries)  # type: ignore[misc]
    for entries in merged.values():
        entries.sort()
    return merged
