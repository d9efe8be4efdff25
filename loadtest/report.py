"""Turning a finished Locust run into a verdict: thresholds table and the process exit code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loadtest.thresholds import DEFAULT_THRESHOLDS, Sample, Thresholds, evaluate


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


def judge(stats: Any, profile: str, limits: Thresholds = DEFAULT_THRESHOLDS) -> int:
    """Print the threshold table; 0 when every threshold holds, else 1."""
    checks = evaluate(samples(stats), limits)
    print(f"\nBlack-Friday thresholds (profile {profile}):")
    for check in checks:
        print("  " + check.line())
    passed = all(check.passed for check in checks)
    print("  PASSED" if passed else "  FAILED: a threshold was missed")
    return 0 if passed else 1
