"""Adaptive concurrency limit of one backend: a gradient controller on measured latency (pure).

The shape is Envoy's `adaptive_concurrency` gradient controller, with Netflix
concurrency-limits' habits where they help a small fleet:

* **minRTT** is the latency of the backend when nothing queues in it. It is measured by a
  *probe*: for a moment the limit drops to the floor and the p50 of the next
  `probe_samples` answers sent at that concurrency becomes minRTT. A fresh limit starts
  at the ceiling with the first window's latency as its guess, and probes first a fifth of
  the interval or more after its start. Probes repeat every `probe_interval` seconds, because a backend's
  idle latency changes (deploys, data growth, a noisy neighbour). Every lb process probes a
  backend **in step**: at the same moments of the host's monotonic clock, on a grid offset
  per backend (`key`). A probe in one worker while the other kept sending measured the
  backend under the other's load, not idle, and the gradient then took a standing queue
  in the backend for its normal latency. The offset spreads the probes of different
  backends, so the fleet never drops to its floors all at once.
* **sampleRTT** is the p50 of the answers in the last sample window (`window` seconds).
* Each window: `gradient = clamp(minRTT * (1 + buffer) / sampleRTT, 0.5, 2)` and
  `limit = limit * gradient + sqrt(limit)`, between `floor` and `ceiling`. When sampleRTT
  grows, requests are queueing inside the backend: the gradient falls below 1 and the
  limit shrinks towards the backend's real concurrency; the square-root headroom keeps a
  small queue there so it never idles between answers.
* A window in which the limit was full while the latency showed no queueing (sampleRTT
  within minRTT * (1 + buffer)) doubles it at once, slow-start style: the limit, not the
  backend, held requests back. After a quiet spell the app-limited rule below had brought
  the limits down to a few dozen; a crowd of 1,024 connections onto backends answering in
  1 ms then waited for the smoothed gradient to grow them ~15% a window and 10,738 of its
  requests were shed as overloaded in the first 1.5 s, with the backends idle. The next
  window then lasts a few round trips, not `window`, and a window in which the limit fills
  up with no queueing ends as soon as a few round trips show it, so a limit grows tenfold
  in tens of milliseconds, before a queue counts as standing. Doubling stops at the limit
  where the backend last showed queueing (TCP's ssthresh): a quiet spell does not make a
  backend faster, and under overload a mix of cheap and dear requests makes a window look
  unloaded now and then (the bench saw a limit doubled from 46 to 92 that way, mid-run).
* A window in which in-flight never came near the limit does not raise it (the limit
  would otherwise grow without bound while idle: Netflix's "app-limited" rule), and moves
  it towards twice the in-flight actually used, or that plus IDLE_HEADROOM if more.
* A timeout is a drop: the limit backs off by 10% (AIMD's decrease).
* A window faster than minRTT pulls minRTT down a fifth of the way: a probe that ran while
  the host was busy (replicas sharing cores) must not leave the limit inflated until the
  next probe.

Latencies are measured by the proxy from sending the request to the response head, so the
time a request waited in the lb's own queue never counts. Time comes from `clock`: the
host's monotonic clock, one for every process on it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Final

Clock = Callable[[], float]

MIN_GRADIENT: Final = 0.5
MAX_GRADIENT: Final = 2.0
DROP_BACKOFF: Final = 0.9
SMOOTHING: Final = 0.5  # share of a computed change applied at once (Gradient2's smoothing)
WINDOW_RTTS: Final = 2.0  # a sample window lasts at least this many round trips
MIN_WINDOW_SAMPLES: Final = 5
MIN_RTT_SMOOTHING: Final = 0.2
MAX_MIN_RTT_RISE: Final = 1.5
FIRST_PROBE: Final = 0.2  # the first probe comes this share of the interval or more after start
# Outside a probe at most one attempt in this many seconds has its latency measured:
# measuring costs two clock reads at each end, one a system call (lb/http/upstream.py), and
# a window's median needs dozens of samples, not thousands.
SAMPLE_GAP: Final = 0.002
IDLE_HEADROOM: Final = 4  # requests above the use an app-limited limit keeps room for


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class GradientLimit:
    """The concurrency limit of one backend. `sample()` each measured latency, `drop()` on a
    timeout; read `limit` (a whole number between floor and ceiling) before sending."""

    __slots__ = (
        "_clock",
        "_early_at",
        "_growing",
        "_last_measured",
        "_max_in_flight",
        "_next_probe",
        "_probe",
        "_samples",
        "_saved",
        "_ssthresh",
        "_window_end",
        "buffer",
        "ceiling",
        "estimate",
        "floor",
        "full_share",
        "min_rtt",
        "phase",
        "probe_interval",
        "probe_samples",
        "probes",
        "sample_rtt",
        "window",
    )

    def __init__(
        self,
        *,
        clock: Clock,
        floor: int,
        ceiling: int,
        window: float = 0.1,
        probe_interval: float = 30.0,
        probe_samples: int = 20,
        buffer: float = 0.25,
        key: str = "",
        full_share: float = 1.0,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError("need 1 <= floor <= ceiling")
        self._clock = clock
        self.floor, self.ceiling = floor, ceiling
        self.window = window
        self.probe_interval = probe_interval
        self.probe_samples = probe_samples
        self.buffer = buffer
        # the share of the limit that counts as full: the part the critical reserve leaves
        # to the other classes (they never fill the rest)
        self.full_share = full_share
        # A fresh lb knows nothing of its backends: it starts open (the ceiling), takes the
        # first window's latency as minRTT, and probes properly soon after. Starting at the
        # floor instead would shed a burst that arrives before any answer came back.
        self.estimate = float(ceiling)  # the limit as a real number
        self.min_rtt = 0.0  # 0: not measured yet
        self.sample_rtt = 0.0
        self._samples: list[float] = []
        self._max_in_flight = 0
        self._last_measured = -math.inf
        self._window_end = clock() + window
        self._early_at = clock()  # from when a full limit may end its window early
        self._probe = False
        self.probes = 0  # probes completed
        self._growing = False  # doubling: every attempt is measured, windows are short
        # where the backend last showed queueing: slow start stops there (TCP's ssthresh)
        self._ssthresh = float(ceiling)
        self._saved = float(ceiling)  # the limit to return to after a probe
        # where this backend's probes fall within the interval: the same in every process
        self.phase = zlib.crc32(key.encode()) / 2**32 * probe_interval
        # the first probe: the interval's first grid point a fifth of the interval or more
        # after the start (6-36 s by default), so that a reload's fresh workers do not
        # probe while they take over; until then the first window's latency stands in
        self._next_probe = self._aligned(clock() + FIRST_PROBE * probe_interval, probe_interval)

    @property
    def limit(self) -> int:
        """Requests this backend may have in flight now."""
        if self._probe:
            return self.floor
        return max(self.floor, min(self.ceiling, int(self.estimate)))

    @property
    def unprobed_limit(self) -> int:
        """`limit` as it is outside a probe (the one a probe returns to, before halving)."""
        return max(
            self.floor, min(self.ceiling, int(self._saved if self._probe else self.estimate))
        )

    @property
    def probing(self) -> bool:
        return self._probe

    def wants_sample(self, now: float) -> bool:
        """Should the attempt starting `now` be measured? Every one during a probe or
        while the limit doubles (both need their samples quickly), else one per SAMPLE_GAP."""
        if self._probe or self._growing or now - self._last_measured >= SAMPLE_GAP:
            self._last_measured = now
            return True
        return False

    def in_flight(self, count: int) -> None:
        """Tell the limit how many requests are in flight (at each send)."""
        if count > self._max_in_flight:
            self._max_in_flight = count

    def sample(self, seconds: float, in_flight: int = 0) -> None:
        """One measured latency (request sent to response head, seconds), and how many
        requests were in flight on the backend while it ran."""
        now = self._clock()
        if self._probe:
            # only answers that ran at the floor's concurrency tell the unloaded latency
            if in_flight <= self.floor:
                self._samples.append(seconds)
                if len(self._samples) >= self.probe_samples:
                    self._end_probe(now)
            return
        self._samples.append(seconds)
        if now >= self._window_end:
            self._update(now)
        elif (
            now >= self._early_at
            and self.estimate < self._ssthresh
            and self._max_in_flight >= int(self.estimate * self.full_share) - 1
            and len(self._samples) >= MIN_WINDOW_SAMPLES
        ):
            # the limit filled up inside the window, a few round trips in: if the backend
            # shows no queueing, the limit is what holds a crowd back; judge now, not at
            # the window's end (else look again a few round trips later)
            self._early_at = now + WINDOW_RTTS * self.min_rtt
            if self.min_rtt > 0 and median(self._samples) <= self.min_rtt * (1 + self.buffer):
                self._update(now)

    def drop(self) -> None:
        """A request timed out at the backend: back off multiplicatively."""
        if not self._probe:
            self.estimate = max(float(self.floor), self.estimate * DROP_BACKOFF)

    # -- internals --------------------------------------------------------------------------

    def _update(self, now: float) -> None:
        self._growing = False
        samples, self._samples = self._samples, []
        busy = self._max_in_flight
        self._max_in_flight = 0
        # a window spans a few round trips: the answers in it must be to requests sent
        # under the limit it is judging, or the controller chases its own lag and swings
        self._window_end = now + max(self.window, WINDOW_RTTS * self.min_rtt)
        self._early_at = now + WINDOW_RTTS * self.min_rtt
        if now >= self._next_probe:
            self._start_probe()
            return
        if len(samples) < MIN_WINDOW_SAMPLES:
            self._samples = samples  # too few answers to judge: keep collecting
            return
        self.sample_rtt = median(samples)
        if self.min_rtt <= 0:
            self.min_rtt = self.sample_rtt  # the first window: a first guess until the probe
            return
        if self.sample_rtt < self.min_rtt:
            # faster than the probe said: the probe ran while something else (a neighbour
            # on the host, the other replicas) slowed the backend. Move towards the better
            # figure, a step at a time: one lucky window of cheap requests is not the rule
            self.min_rtt += MIN_RTT_SMOOTHING * (self.sample_rtt - self.min_rtt)
        limit = self.estimate
        if self.sample_rtt <= 0:
            gradient = MAX_GRADIENT
        else:
            gradient = self.min_rtt * (1 + self.buffer) / self.sample_rtt
            gradient = min(MAX_GRADIENT, max(MIN_GRADIENT, gradient))
        queueing = self.sample_rtt > self.min_rtt * (1 + self.buffer)
        full = busy >= int(limit * self.full_share) - 1
        if full and not queueing and limit < self._ssthresh:
            # full, and no queueing in the backend: the limit is what holds requests back.
            # Double it (up to where the backend last queued), and judge again after a few
            # round trips, not a whole window: the requests it holds back wait meanwhile
            self.estimate = min(float(self.ceiling), self._ssthresh, limit * MAX_GRADIENT)
            self._window_end = now + WINDOW_RTTS * self.min_rtt
            self._growing = self.estimate < min(float(self.ceiling), self._ssthresh)
            return
        new = limit * gradient + math.sqrt(limit)
        if busy < limit / 2:
            # app-limited: too little traffic to learn that more would be fine, and a limit
            # far above what is used protects nothing (a fresh limit starts at the ceiling):
            # keep it within twice the use, with room for a small burst above that (at
            # two requests in flight a limit of two turned a light burst meeting a slow
            # moment, a restarted replica or a Redis timeout, into 503s); the gradient
            # grows it again when traffic comes
            room = max(2.0 * busy, busy + IDLE_HEADROOM)
            new = min(new, limit, max(float(self.floor), room))
        new = limit + SMOOTHING * (new - limit)
        self.estimate = min(float(self.ceiling), max(float(self.floor), new))
        if queueing:
            # a mix of fast and slow requests makes a window look unloaded now and then:
            # without this a lucky window mid-overload doubled a limit into a backend
            self._ssthresh = max(float(self.floor), self.estimate)

    def _start_probe(self) -> None:
        self._saved = self.estimate
        self._probe = True
        self._samples = []

    def _end_probe(self, now: float) -> None:
        measured = median(self._samples)
        if self.min_rtt > 0:
            # a probe can raise minRTT by half at most: one taken while the host's cores
            # were busy with the other replicas would otherwise inflate every limit until
            # the next probe; a backend that really got slower is followed probe by probe
            measured = min(measured, self.min_rtt * MAX_MIN_RTT_RISE)
        self.min_rtt = measured
        self._samples = []
        self._probe = False
        self.probes += 1
        # half the limit from before the probe: growth is quick when there is room (the
        # gradient may double it each window), and a limit that had crept up does not
        # return whole into a backend that got slower
        self.estimate = max(self._saved / 2, float(self.floor))
        # the next point of the interval's grid at least half an interval away
        interval = self.probe_interval
        self._next_probe = self._aligned(now + interval / 2, interval)
        self._window_end = now + self.window
        self._max_in_flight = 0

    def _aligned(self, after: float, grid: float) -> float:
        """The first moment at or after `after` on a grid of `grid` seconds, offset by this
        backend's phase: every process computes the same moments from the host's clock."""
        return self.phase + math.ceil((after - self.phase) / grid) * grid

    def snapshot(self) -> dict[str, float | int | bool]:
        return {
            "limit": self.limit,
            "min_rtt_ms": round(self.min_rtt * 1000, 2),
            "sample_rtt_ms": round(self.sample_rtt * 1000, 2),
            "probing": self._probe,
            "probes": self.probes,
        }
