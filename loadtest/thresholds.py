"""Pass/fail thresholds of a load run, judged from Locust's per-request statistics (pure).

Deliberately free of locust imports (locust monkey-patches the process with gevent on import),
so the verdict logic is testable anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from loadtest import names


@dataclass(frozen=True, slots=True)
class Sample:
    """Locust's statistics for one request name: counts and the response-time histogram (ms)."""

    name: str
    requests: int
    failures: int
    response_times: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Thresholds:
    browse_p95_ms: float = 200.0
    booking_p95_ms: float = 500.0
    max_failure_ratio: float = 0.01
    min_requests: int = 1
    # answered 2xx (and other wanted answers) per second over the run; 0: not judged
    min_goodput_rps: float = 0.0


DEFAULT_THRESHOLDS = Thresholds()

# The overload profiles push the stack past capacity on purpose: the lb sheds the excess
# (503 overloaded + Retry-After, an expected outcome the users honour), and what is judged
# is that work still gets done (goodput) and that what was admitted stayed fast.
PROFILE_THRESHOLDS: dict[str, Thresholds] = {
    "flash": Thresholds(browse_p95_ms=500.0, booking_p95_ms=1000.0, min_goodput_rps=10.0),
    "overload": Thresholds(browse_p95_ms=300.0, booking_p95_ms=800.0, min_goodput_rps=100.0),
}


def thresholds_for(profile: str) -> Thresholds:
    return PROFILE_THRESHOLDS.get(profile, DEFAULT_THRESHOLDS)


@dataclass(frozen=True, slots=True)
class Check:
    """One threshold's verdict: what was measured against what limit."""

    name: str
    measured: float
    limit: float
    passed: bool

    def line(self) -> str:
        verdict = "ok  " if self.passed else "FAIL"
        return f"{verdict} {self.name:<28} {self.measured:>10.2f}  (limit {self.limit:g})"


def percentile(histogram: dict[int, int], total: int, share: float) -> int:
    """The response time that `share` of `total` requests finished within (Locust's method)."""
    within = int(total * share)
    processed = 0
    for bucket in sorted(histogram, reverse=True):
        processed += histogram[bucket]
        if total - processed <= within:
            return bucket
    return 0


def p95(samples: Iterable[Sample]) -> float:
    """The 95th percentile response time over the merged histograms of `samples`, in ms."""
    merged: dict[int, int] = {}
    total = 0
    for sample in samples:
        total += sample.requests
        for bucket, count in sample.response_times.items():
            merged[bucket] = merged.get(bucket, 0) + count
    if total == 0:
        return 0.0
    return float(percentile(merged, total, 0.95))


def evaluate(
    samples: Iterable[Sample], limits: Thresholds = DEFAULT_THRESHOLDS, seconds: float = 0.0
) -> list[Check]:
    """Judge a run: browse p95, booking p95, failure share (expected outcomes excluded), and,
    when the limits ask for it, goodput over the `seconds` the run lasted."""
    real = [s for s in samples if not names.is_expected(s.name)]
    browse = [s for s in real if names.group(s.name) == names.BROWSE]
    booking = [s for s in real if names.group(s.name) == names.BOOKING]
    requests = sum(s.requests for s in real)
    failures = sum(s.failures for s in real)
    ratio = failures / requests if requests else 0.0
    browse_requests = sum(s.requests for s in browse)
    booking_requests = sum(s.requests for s in booking)
    goodput: list[Check] = []
    if limits.min_goodput_rps > 0:
        rate = (requests - failures) / seconds if seconds > 0 else 0.0
        goodput = [
            Check("goodput req/s", rate, limits.min_goodput_rps, rate >= limits.min_goodput_rps)
        ]
    return [
        *goodput,
        Check(
            "browse p95 ms", p95(browse), limits.browse_p95_ms, p95(browse) <= limits.browse_p95_ms
        ),
        Check(
            "booking p95 ms",
            p95(booking),
            limits.booking_p95_ms,
            p95(booking) <= limits.booking_p95_ms,
        ),
        Check("failure ratio", ratio, limits.max_failure_ratio, ratio <= limits.max_failure_ratio),
        Check(
            "browse requests",
            browse_requests,
            limits.min_requests,
            browse_requests >= limits.min_requests,
        ),
        Check(
            "booking requests",
            booking_requests,
            limits.min_requests,
            booking_requests >= limits.min_requests,
        ),
    ]
