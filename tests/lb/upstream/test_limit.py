"""The adaptive concurrency limit: probing minRTT, following the latency gradient (pure)."""

from __future__ import annotations

import pytest

from lb.upstream.limit import GradientLimit
from tests.support.clock import FakeClock


def make(clock: FakeClock, floor: int = 2, ceiling: int = 64, key: str = "") -> GradientLimit:
    return GradientLimit(clock=clock, floor=floor, ceiling=ceiling, probe_samples=10, key=key)


def probe(limit: GradientLimit, clock: FakeClock, rtt: float) -> None:
    while limit.probing:
        clock.advance(rtt)
        limit.sample(rtt, in_flight=limit.floor)


def run(limit: GradientLimit, clock: FakeClock, slots: int, service: float, seconds: float) -> None:
    """Drive `limit` against a backend of `slots` x `service`: latency grows once in flight
    exceeds its slots (the excess queues inside it), and the lb always fills the limit."""
    end = clock.now + seconds
    while clock.now < end:
        in_flight = limit.limit
        limit.in_flight(in_flight)
        rtt = service * max(1.0, in_flight / slots)
        clock.advance(rtt / in_flight)
        limit.sample(rtt, in_flight)


def start(limit: GradientLimit, clock: FakeClock) -> None:
    """Run the limit until its first probe begins."""
    while not limit.probing:
        limit.in_flight(limit.limit)
        clock.advance(0.01)
        limit.sample(0.2, limit.limit)


def test_starts_open_then_probes_and_learns_min_rtt_from_low_concurrency_answers_only() -> None:
    clock = FakeClock()
    limit = make(clock)
    # a burst before any answer came back is not shed by a limit that knows nothing yet
    assert not limit.probing and limit.limit == 64
    started = clock.now
    start(limit, clock)
    assert 6.0 <= clock.now - started <= 36.0  # the interval's grid, a fifth of it or more on
    assert limit.limit == 2
    limit.sample(5.0, in_flight=10)  # sent before the probe at high concurrency: ignored
    probe(limit, clock, 0.05)
    assert not limit.probing
    assert limit.min_rtt == pytest.approx(0.05)


@pytest.mark.parametrize("slots", [1, 4, 16])
def test_converges_just_above_the_backends_real_concurrency(slots: int) -> None:
    clock = FakeClock()
    limit = make(clock)
    start(limit, clock)
    probe(limit, clock, 0.1)
    run(limit, clock, slots, 0.1, 20.0)
    # enough to keep every slot busy, a small queue of headroom, never runaway
    assert slots <= limit.limit <= 2 * slots + 4


def test_does_not_grow_while_app_limited_and_comes_down_to_twice_the_use() -> None:
    clock = FakeClock()
    limit = make(clock)
    assert limit.limit == 64
    for _ in range(500):
        limit.in_flight(3)  # three requests at a time: nothing says more would be fine
        clock.advance(0.01)
        limit.sample(0.01, 3)
    assert 6 <= limit.limit <= 7


def test_stays_within_floor_and_ceiling_and_backs_off_on_timeouts() -> None:
    clock = FakeClock()
    limit = make(clock, floor=3, ceiling=8)
    start(limit, clock)
    probe(limit, clock, 0.01)
    run(limit, clock, 100, 0.01, 5.0)  # a huge backend: only the ceiling stops growth
    assert limit.limit == 8
    for _ in range(50):
        limit.drop()
    assert limit.limit == 3


def test_probes_again_after_the_interval_and_learns_a_new_min_rtt() -> None:
    clock = FakeClock()
    limit = make(clock)
    start(limit, clock)
    probe(limit, clock, 0.1)
    started = clock.now
    run(limit, clock, 8, 0.1, 14.0)
    assert not limit.probing  # not before half the probe interval (30 s)
    while not limit.probing:  # the backend got faster meanwhile
        limit.in_flight(limit.limit)
        clock.advance(0.01)
        limit.sample(0.05, limit.limit)
    assert 15.0 <= clock.now - started <= 45.0  # the interval's next point on the grid
    assert limit.limit == limit.floor
    probe(limit, clock, 0.05)
    assert limit.min_rtt == pytest.approx(0.05)


def test_rejects_a_floor_above_the_ceiling() -> None:
    with pytest.raises(ValueError):
        GradientLimit(clock=FakeClock(), floor=5, ceiling=4)


def test_a_probe_taken_on_a_busy_host_is_corrected_by_faster_windows() -> None:
    clock = FakeClock()
    limit = make(clock)
    start(limit, clock)
    probe(limit, clock, 0.3)  # the neighbours were busy during the probe
    for _ in range(300):  # then the backend answers in 0.1 s
        limit.in_flight(2)
        clock.advance(0.05)
        limit.sample(0.1, 2)
    assert limit.min_rtt < 0.12


def test_a_probe_raises_min_rtt_by_half_at_most() -> None:
    clock = FakeClock()
    limit = make(clock)
    start(limit, clock)
    probe(limit, clock, 0.05)
    for expected in (0.075, 0.1125, 0.16875, 0.2):  # the backend really got 4x slower
        while not limit.probing:
            limit.in_flight(limit.limit)
            clock.advance(0.05)
            limit.sample(0.2, limit.limit)
        probe(limit, clock, 0.2)
        assert limit.min_rtt == pytest.approx(expected)


def test_measures_one_attempt_per_sample_gap_but_every_one_while_probing() -> None:
    clock = FakeClock()
    limit = make(clock)
    # 10,000 attempts a second: one in 20 is measured (SAMPLE_GAP = 2 ms)
    wanted = 0
    for _ in range(1000):
        clock.advance(0.0001)
        wanted += limit.wants_sample(clock.now)
    assert 45 <= wanted <= 55
    start(limit, clock)
    assert limit.probing
    assert all(limit.wants_sample(clock.now) for _ in range(20))


def test_an_app_limited_limit_keeps_room_for_a_small_burst() -> None:
    clock = FakeClock()
    limit = make(clock)
    for _ in range(500):
        limit.in_flight(1)  # one request at a time: light traffic
        clock.advance(0.01)
        limit.sample(0.01, 1)
    assert limit.limit == 5  # one in use, and room for four more (twice the use would be 2)


def probe_starts(limit: GradientLimit, clock: FakeClock, until: float) -> list[float]:
    """When `limit` began its probes, driven by answers every 10 ms until `until`."""
    starts = []
    while clock.now < until:
        was = limit.probing
        limit.in_flight(limit.limit)
        clock.advance(0.01)
        limit.sample(0.02, limit.floor if limit.probing else limit.limit)
        if limit.probing and not was:
            starts.append(clock.now)
    return starts


def test_every_process_probes_a_backend_in_step_and_backends_apart() -> None:
    """Two lb workers measuring one backend: a probe in one while the other kept sending
    measured the backend under the other's load. Started at different moments, both probe
    at the same moments of the host's clock; another backend's probes fall elsewhere."""
    clock_a, clock_b = FakeClock(), FakeClock()
    clock_b.advance(11.3)  # the second worker starts later
    first = make(clock_a, key="http://10.0.0.1:8000")
    clock_a.advance(11.3)
    second = make(clock_b, key="http://10.0.0.1:8000")
    clock_c = FakeClock()
    other = make(clock_c, key="http://10.0.0.2:8000")
    a = probe_starts(first, clock_a, 1200.0)
    b = probe_starts(second, clock_b, 1200.0)
    c = probe_starts(other, clock_c, 1200.0)
    assert len(a) >= 5 and len(b) >= 5 and len(c) >= 5
    # the same moments, give or take a sample window (a probe starts when one ends)
    for moment in b[:4]:
        assert any(abs(moment - t) <= 0.15 for t in a), (moment, a)
    assert all(abs(x - t) > 1.0 for x in c for t in a), (c, a)


def test_a_full_limit_over_a_backend_that_does_not_queue_doubles_each_few_round_trips() -> None:
    """Slow start: a crowd meets a limit that a quiet spell brought down, on a backend
    with room to spare (latency flat). The limit, not the backend, holds it back."""
    clock = FakeClock()
    limit = make(clock, ceiling=1024)
    start(limit, clock)
    probe(limit, clock, 0.01)
    for _ in range(300):  # quiet: one request at a time, the limit comes down
        limit.in_flight(1)
        clock.advance(0.01)
        limit.sample(0.01, 1)
    quiet = limit.limit
    assert quiet <= 8
    began = clock.now
    while limit.limit < 200 and clock.now - began < 1.0:  # the crowd: 1,000 want in
        for k in range(limit.limit):
            limit.in_flight(k + 1)
        clock.advance(0.01)  # one round trip: the answers come back, as fast as ever
        for _ in range(limit.limit):
            if limit.wants_sample(clock.now):
                limit.sample(0.01, limit.limit)
    assert limit.limit >= 200
    assert clock.now - began <= 0.15  # 15 round trips, not the seconds of +15% a window


def test_a_full_limit_over_a_backend_that_queues_does_not_double() -> None:
    clock = FakeClock()
    limit = make(clock, ceiling=1024)
    start(limit, clock)
    probe(limit, clock, 0.01)
    run(limit, clock, 8, 0.01, 5.0)  # 8 slots: beyond them latency grows
    assert limit.limit <= 24


def test_doubling_stops_where_the_backend_last_queued() -> None:
    """Under overload a window of cheap requests looks unloaded now and then; a limit must
    not double into a backend it just saw queueing (TCP's ssthresh)."""
    clock = FakeClock()
    limit = make(clock, ceiling=1024)
    start(limit, clock)
    probe(limit, clock, 0.01)
    run(limit, clock, 8, 0.01, 5.0)  # 8 slots: beyond them latency grows
    congested = limit.limit
    for _ in range(20):  # lucky windows: full, and as fast as the backend ever is
        for k in range(limit.limit):
            limit.in_flight(k + 1)
        clock.advance(0.01)
        for _ in range(limit.limit):
            if limit.wants_sample(clock.now):
                limit.sample(0.01, limit.limit)
    assert limit.limit <= congested + 8  # the gradient's slow climb, not 2x per window
