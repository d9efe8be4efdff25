"""The /status view: worker snapshots combined into one picture, with recent rates, and its HTML."""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

Snapshot = dict[str, Any]
RATE_WINDOW = 10.0  # seconds the "recent" rates look back


class RateMeter:
    """Recent answers per second, per backend, from samples of a process's answer counters
    (taken every tick and at each snapshot) over the last RATE_WINDOW seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._history: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, totals: dict[str, int]) -> dict[str, float]:
        now = self._clock()
        history = self._history
        history.append((now, dict(totals)))
        while len(history) > 1 and now - history[1][0] >= RATE_WINDOW:
            history.popleft()
        then, old = history[0]
        elapsed = now - then
        if elapsed <= 0:
            return {name: 0.0 for name in totals}
        return {
            name: round(max(0, count - old.get(name, 0)) / elapsed, 2)
            for name, count in totals.items()
        }


class StatusBoard:
    """Merges per-worker snapshots (see `Runtime.snapshot()`) into one picture.

    Per backend: healthy/eligible only if every worker says so, the worst breaker state,
    outstanding requests, counters and recent rates summed.
    """

    def combine(self, snapshots: Sequence[Snapshot], *, draining: bool = False) -> Snapshot:
        rates: dict[str, float] = {}
        backends: dict[str, dict[str, Any]] = {}
        answered: dict[str, int] = {}
        in_flight = 0
        admission: dict[str, Any] = {}
        rejected: dict[str, int] = {}
        for snap in snapshots:
            in_flight += snap.get("in_flight", 0)
            admission = admission or snap.get("admission", {})
            for key, count in snap.get("top_rejected", []):
                rejected[key] = rejected.get(key, 0) + count
            for name, count in snap.get("answered", {}).items():
                answered[name] = answered.get(name, 0) + count
            for name, rate in snap.get("rates", {}).items():
                rates[name] = round(rates.get(name, 0.0) + rate, 2)
            for row in snap.get("backends", []):
                merged = backends.get(row["name"])
                if merged is None:
                    backends[row["name"]] = dict(row)
                    continue
                merged["healthy"] = merged["healthy"] and row["healthy"]
                merged["eligible"] = merged["eligible"] and row["eligible"]
                merged["drained"] = merged["drained"] or row["drained"]
                merged["breaker"] = _worst(merged["breaker"], row["breaker"])
                for field in ("outstanding", "requests", "failures", "ejections"):
                    merged[field] = merged.get(field, 0) + row.get(field, 0)
                if row.get("ejected_until") is not None:
                    merged["ejected_until"] = max(
                        merged.get("ejected_until") or 0.0, row["ejected_until"]
                    )
        per_worker = [
            {
                "pid": snap.get("pid"),
                "in_flight": snap.get("in_flight", 0),
                "answered": sum(snap.get("answered", {}).values()),
                "draining": snap.get("draining", False),
            }
            for snap in snapshots
        ]
        for name, row in backends.items():
            row["rate_per_second"] = rates.get(name, 0.0)
        return {
            "draining": draining,
            "workers": len(snapshots),
            "in_flight": in_flight,
            "rate_per_second": round(sum(rates.values()), 2),
            "rates_per_second": rates,
            "answered": answered,
            "per_worker": per_worker,
            "backends": list(backends.values()),
            "admission": admission,
            "top_rejected": sorted(rejected.items(), key=lambda kv: -kv[1])[:10],
            "overload": combine_overload(snapshots),
        }


# -- overload control (lb/overload.py) ----------------------------------------------------------


def combine_overload(snapshots: Sequence[Snapshot]) -> Snapshot:
    """The workers' overload sections as one: queue and counts summed, the longest delay,
    per backend the limits and in-flight summed (each worker has its own limit)."""
    merged: Snapshot = {
        "queue_length": 0,
        "queue_delay_ms": 0.0,
        "queue_delay_max_ms": 0.0,
        "standing_queue": False,
        "drain_per_second": 0.0,
        "shed_per_second": 0.0,
        "admitted": {},
        "shed": {},
        "backends": [],
    }
    rows: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        part = snap.get("overload")
        if not part:
            continue
        for key in ("queue_length", "drain_per_second", "shed_per_second"):
            merged[key] = round(merged[key] + part.get(key, 0), 1)
        for key in ("queue_delay_ms", "queue_delay_max_ms"):
            merged[key] = max(merged[key], part.get(key, 0.0))
        merged["standing_queue"] = merged["standing_queue"] or part.get("standing_queue", False)
        for key in ("admitted", "shed"):
            for klass, count in part.get(key, {}).items():
                merged[key][klass] = merged[key].get(klass, 0) + count
        for row in part.get("backends", []):
            seen = rows.get(row["name"])
            if seen is None:
                rows[row["name"]] = dict(row)
                continue
            seen["limit"] += row["limit"]
            seen["in_flight"] += row["in_flight"]
            seen["min_rtt_ms"] = max(seen["min_rtt_ms"], row["min_rtt_ms"])
            seen["sample_rtt_ms"] = max(seen["sample_rtt_ms"], row["sample_rtt_ms"])
            seen["probing"] = seen["probing"] or row["probing"]
    merged["backends"] = list(rows.values())
    return merged


def render_overload_html(overload: Snapshot) -> str:
    """The overload section of the status page."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(str(b['name']))}</td><td>{b['limit']}</td><td>{b['in_flight']}</td>"
        f"<td>{b['min_rtt_ms']}</td><td>{b['sample_rtt_ms']}</td>"
        f"<td>{'yes' if b['probing'] else ''}</td></tr>"
        for b in overload.get("backends", [])
    )
    shed = ", ".join(f"{esc(k)} {v}" for k, v in overload.get("shed", {}).items())
    return (
        f"<h2>overload</h2><p>queue {overload.get('queue_length', 0)} waiting, "
        f"delay {overload.get('queue_delay_ms', 0)} ms (max {overload.get('queue_delay_max_ms', 0)} ms)"
        f"{' &mdash; <b>STANDING QUEUE</b>' if overload.get('standing_queue') else ''}; "
        f"shed: {shed or 'none'}</p>"
        "<table><tr><th>backend</th><th>limit</th><th>in flight</th><th>min RTT ms</th>"
        f"<th>sample RTT ms</th><th>probing</th></tr>{rows}</table>"
    )


_BREAKER_ORDER = {"closed": 0, "half_open": 1, "open": 2}


def _worst(a: str, b: str) -> str:
    return a if _BREAKER_ORDER.get(a, 2) >= _BREAKER_ORDER.get(b, 2) else b


def render_html(status: Snapshot) -> str:
    """A small self-refreshing page for a browser."""
    esc = html.escape
    rows = []
    for b in status["backends"]:
        state = "up" if b.get("eligible") else "down"
        rows.append(
            "<tr class='{cls}'><td>{name}</td><td>{healthy}</td><td>{breaker}</td>"
            "<td>{ejected}</td><td>{drained}</td><td>{out}</td><td>{rate}</td>"
            "<td>{req}</td><td>{fail}</td><td>"
            "<form method='post' action='/backends/{name}/{action}'>"
            "<button>{action}</button></form></td></tr>".format(
                cls=state,
                name=esc(b["name"]),
                healthy="yes" if b["healthy"] else "NO",
                breaker=esc(str(b["breaker"])),
                ejected="" if b.get("ejected_until") is None else f"{b['ejected_until']:.1f}s",
                drained="yes" if b["drained"] else "",
                out=b["outstanding"],
                rate=f"{b.get('rate_per_second', 0.0):.1f}",
                req=b.get("requests", 0),
                fail=b.get("failures", 0),
                action="restore" if b["drained"] else "drain",
            )
        )
    admission = status.get("admission") or {}
    rules = "".join(
        f"<li>{esc(str(r.get('name')))}: {esc(str(r.get('method') or '*'))} "
        f"{esc(str(r.get('prefix') or '/'))} capacity {r.get('capacity')}, "
        f"{r.get('rate')}/s</li>"
        for r in admission.get("rules", [])
    )
    rejected = "".join(
        f"<li>{esc(str(key))}: {count}</li>" for key, count in status.get("top_rejected", [])
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>lb status</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .3em .8em; border: 1px solid #ccc; }}
tr.down {{ background: #fdd; }} tr.up {{ background: #efe; }}
</style></head><body>
<h1>lb status</h1>
<p>{status["workers"]} worker(s), {status["in_flight"]} request(s) in flight,
{status["rate_per_second"]:.1f} req/s recently{" &mdash; <b>DRAINING</b>" if status["draining"] else ""}.</p>
<table><tr><th>backend</th><th>healthy</th><th>breaker</th><th>ejected for</th>
<th>drained</th><th>outstanding</th><th>req/s</th><th>requests</th><th>failures</th><th></th></tr>
{"".join(rows)}
</table>
{render_overload_html(status.get("overload") or {})}
<h2>admission</h2><p>mode: {esc(str(admission.get("mode", "off")))}</p><ul>{rules}</ul>
<h2>most rejected clients</h2><ul>{rejected or "<li>none</li>"}</ul>
<p><a href="/status?format=json">JSON</a> &middot; <a href="/metrics">metrics</a></p>
</body></html>
"""
