"""One client cannot take a backend out: a 500 counts against a backend only once several
clients met one; gateway failures (connect, reset, timeout, 502/504) count whoever met them."""

from __future__ import annotations

from lb.upstream.backend import Backend, Outcome
from lb.upstream.outlier import ClientSpread
from lb.upstream.pool import Pool
from tests.lb.upstream.test_pool import make
from tests.support.clock import FakeClock


def finish(pool: Pool, backend: Backend, outcome: Outcome, status: int, client: str) -> None:
    backend.outstanding += 1  # as if picked
    pool.in_flight += 1
    pool.finish(backend, outcome, status=status, client=client)


def test_one_clients_500s_never_eject_a_backend_nor_open_its_breaker() -> None:
    pool, _, events = make(3, LB_BREAKER_MIN_REQUESTS="5", LB_OUTLIER_FAILURES="3")
    for backend in pool.backends:
        for _ in range(200):
            finish(pool, backend, Outcome.SERVER_ERROR, 500, "6.6.6.6")
    assert events.log == []
    assert pool.eligible_count() == 3
    assert all(b.breaker.state.value == "closed" and b.failures == 0 for b in pool.backends)
    assert all(b.requests == 200 for b in pool.backends)


def test_500s_met_by_several_clients_count() -> None:
    pool, _, events = make(3, LB_OUTLIER_FAILURES="3", LB_ERROR_CLIENTS="3")
    a = pool.backends[0]
    for client in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"):
        finish(pool, a, Outcome.SERVER_ERROR, 500, client)
    # the third distinct client confirms: its 500 and the next two are three in a row
    assert ("ejected", a.name, "server_error") in events.log
    assert a.failures == 3


def test_gateway_failures_from_one_client_still_count() -> None:
    pool, _, events = make(3, LB_OUTLIER_FAILURES="3", LB_OUTLIER_MAX_EJECTED="1")
    a, b = pool.backends[0], pool.backends[1]
    for _ in range(3):
        finish(pool, a, Outcome.SERVER_ERROR, 502, "6.6.6.6")
    for _ in range(3):
        finish(pool, b, Outcome.RESET, 0, "6.6.6.6")
    assert [e[:2] for e in events.log] == [("ejected", a.name), ("ejected", b.name)]


def test_the_spread_forgets_clients_after_its_window() -> None:
    clock = FakeClock()
    spread = ClientSpread(clock=clock, window=10, min_clients=3)
    assert not spread.record("a")
    clock.advance(6)
    assert not spread.record("b")
    clock.advance(6)  # "a" is 12 s old now: out of the window
    assert not spread.record("c")
    assert spread.record("d")
    assert not ClientSpread(clock=clock, window=10, min_clients=2).record("x")


def test_the_spread_remembers_a_bounded_number_of_clients() -> None:
    clock = FakeClock()
    spread = ClientSpread(clock=clock, window=10, min_clients=2)
    for i in range(5000):
        spread.record(f"10.0.{i // 256}.{i % 256}")
    assert len(spread._seen) <= ClientSpread.MAX_KEYS
