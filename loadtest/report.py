"""Turning a finished Locust run into a verdict: thresholds table and the process exit code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loadtest.thresholds import Sample, Thresholds, evaluate, thresholds_for


def report_dir(base: Path, when: time.struct_time) -> Path:
    """Where a run's CSV and HTML go by default: <base>/<UTC timestamp>/."""
    return base / time.strftime("%Y%m%dT%H%M%SZ", when)


def samples(stats: Any) -> list[Sample]:
    """Per-name samples from a locust RequestStats (its `entries`)."""
    return [
        Sample(
            name=entry.name,
            requests=entry.num_requests,
            failures=entry.num_failures,
            response_times=dict(entry.response_times),
        )
        for entry in stats.entries.values()
    ]


def run_seconds(stats: Any) -> float:
    """How long the run lasted, from the first request to the last one (Locust's totals)."""
    total = getattr(stats, "total", None)
    start = getattr(total, "start_time", None)
    last = getattr(total, "last_request_timestamp", None)
    if not start or not last:
        return 0.0
    return max(0.0, float(last) - float(start))


def judge(stats: Any, profile: str, limits: Thresholds | None = None) -> int:
    """Print the threshold table; 0 when every threshold holds, else 1."""
    limits = limits if limits is not None else thresholds_for(profile)
    checks = evaluate(samples(stats), limits, run_seconds(stats))
    print(f"\nBlack-Friday thresholds (profile {profile}):")
    for check in checks:
        print("  " + check.line())
    passed = all(check.passed for check in checks)
    print("  PASSED" if passed else "  FAILED: a threshold was missed")
    return 0 if passed else 1
