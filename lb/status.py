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
        fast: dict[str, int] | None = None
        admission: dict[str, Any] = {}
        rejected: dict[str, int] = {}
        for snap in snapshots:
            in_flight += snap.get("in_flight", 0)
            if snap.get("fast_path") is not None:
                fast = fast or {"taken": 0, "relayed": 0}
                for key in ("taken", "relayed"):
                    fast[key] += snap["fast_path"][key]
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
                "policy_version": snap.get("admission", {}).get("policy_version"),
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
            # requests the fast path started, and answered whole by callback (None: off)
            "fast_path": fast,
            "per_worker": per_worker,
            "backends": list(backends.values()),
            "admission": admission,
            "top_rejected": sorted(rejected.items(), key=lambda kv: -kv[1])[:10],
            "cache": combine_cache(snapshots),
            "overload": combine_overload(snapshots),
        }


# -- the admission policy (issue 15): its own view and form ---------------------------------


def policy_view(policy: Any, scope: str, status: Snapshot) -> dict[str, Any]:
    """The policy in force as the admin listener shows it, with each worker's version."""
    workers = [
        {"pid": w.get("pid"), "policy_version": w.get("policy_version")}
        for w in status.get("per_worker", [])
        if not w.get("draining")
    ]
    return {
        **policy.to_json(),
        "scope": scope,
        "workers": workers,
        "converged": all(w["policy_version"] == policy.version for w in workers),
    }


def render_policy(view: dict[str, Any] | None) -> str:
    """The policy section of the (self-refreshing) status page, linking to the form."""
    if not view:
        return ""
    esc = html.escape
    lag = "" if view.get("converged", True) else " &mdash; <b>workers still applying it</b>"
    return (
        f"<h2>admission policy v{view.get('version')}</h2><p>BUCKET_CAPACITY "
        f"{view.get('bucket_capacity')}, LEAK_RATE {view.get('leak_rate')}, "
        f"LB_RATE_RULES <code>{esc(str(view.get('rules')))}</code>, dry run "
        f"{'on' if view.get('dry_run') else 'off'}; set by {esc(str(view.get('set_by')))}"
        f"{lag}. <a href='/admission/rules?format=html'>change it</a></p>"
    )


def render_policy_page(view: dict[str, Any]) -> str:
    """A page (not refreshing, so typing is not lost) with the policy and a form to change it."""
    esc = html.escape
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(view["set_at"]))
        if view.get("set_at")
        else "at start"
    )
    checked = " checked" if view.get("dry_run") else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lb admission policy</title>
<style>body {{ font: 14px system-ui, sans-serif; margin: 2em; }} label {{ margin-right: 1em; }}</style>
</head><body><h1>admission policy v{view.get("version")}</h1>
<p>set by {esc(str(view.get("set_by")))}, {esc(when)}; a change applies to {esc(str(view.get("scope")))}
{"" if view.get("converged", True) else " &mdash; <b>workers still applying it</b>"}</p>
<form method="post" action="/admission/rules">
<label>BUCKET_CAPACITY <input name="bucket_capacity" value="{view.get("bucket_capacity")}" size="6"></label>
<label>LEAK_RATE <input name="leak_rate" value="{view.get("leak_rate")}" size="6"></label><br>
<label>LB_RATE_RULES <input name="rules" value="{esc(str(view.get("rules", "")))}" size="80"></label><br>
<label><input type="checkbox" name="dry_run" value="1"{checked}> dry run (count, do not reject)</label><br>
<label>admin token <input type="password" name="token" autocomplete="off" required></label>
<button>apply</button>
</form>
<p>The same from a shell: <code>python -m ops tune BUCKET_CAPACITY=40</code>.
<a href="/status">status</a> &middot; <a href="/admission/rules">JSON</a></p>
</body></html>
"""


# -- overload control (lb/overload.py) ----------------------------------------------------------


def combine_overload(snapshots: Sequence[Snapshot]) -> Snapshot:
    """The workers' overload sections as one: queue and counts summed, the longest delay,
    per backend the limits and in-flight summed (each worker has its own limit)."""
    merged: Snapshot = {
        "queue_length": 0,
        "queue_delay_ms": 0.0,
        "queue_delay_max_ms": 0.0,
        "standing_queue": False,
        "critical_standing": False,
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
        merged["critical_standing"] = merged["critical_standing"] or part.get(
            "critical_standing", False
        )
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
            seen["probes"] = min(seen.get("probes", 0), row.get("probes", 0))  # every worker's
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
{render_cache_html(status.get("cache"))}
{render_policy(status.get("policy"))}
<p><a href="/status?format=json">JSON</a> &middot; <a href="/metrics">metrics</a></p>
</body></html>
"""


def combine_cache(snapshots: Sequence[Snapshot]) -> Snapshot | None:
    """The workers' micro-caches (lb/cache/) as one: sizes and counters summed, hit ratio.

    None when the cache is off (LB_CACHE_BYTES=0).
    """
    caches = [snap["cache"] for snap in snapshots if snap.get("cache")]
    if not caches:
        return None
    total: dict[str, Any] = {"workers": len(caches), "results": {}, "purges": {}}
    for field in ("max_bytes", "bytes", "entries", "keys", "evicted", "purged", "in_flight"):
        total[field] = sum(c.get(field, 0) for c in caches)
    total["lock_timeouts"] = sum(c.get("lock_timeouts", 0) for c in caches)
    for group in ("results", "purges"):
        for c in caches:
            for name, count in c.get(group, {}).items():
                total[group][name] = total[group].get(name, 0) + count
    results = total["results"]
    looked = sum(results.values())
    served = sum(results.get(r, 0) for r in ("hit", "stale_revalidate", "stale_error", "coalesced"))
    total["hit_ratio"] = round(served / looked, 4) if looked else 0.0
    total["subscribers"] = sorted({str(c.get("subscriber")) for c in caches})
    return total


def render_cache_html(cache: Snapshot | None) -> str:
    """The cache section of the status page."""
    if not cache:
        return "<h2>cache</h2><p>off (LB_CACHE_BYTES=0)</p>"
    results = ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(cache["results"].items()))
    return (
        f"<h2>cache</h2><p>hit ratio {cache['hit_ratio']:.1%}; "
        f"{cache['bytes'] / 1048576:.1f} of {cache['max_bytes'] / 1048576:.1f} MiB, "
        f"{cache['entries']} entries over {cache['workers']} worker(s); "
        f"{cache['in_flight']} fetches in flight; evicted {cache['evicted']}, "
        f"purged {cache['purged']}; purge subscription: "
        f"{html.escape(', '.join(cache['subscribers']))}</p><p>{results}</p>"
    )
