"""The per-database circuit (pure, fake clock): one failure opens it, connects then fail fast,
one probe per period goes through, and the probe's success closes it."""

from __future__ import annotations

import pytest

from backend.sharding.circuit import ENGINE, Circuit, CircuitOpen, Circuits, with_circuits
from tests.support.clock import FakeClock


def test_a_failure_opens_the_circuit_and_only_one_probe_per_period_goes_through() -> None:
    clock = FakeClock()
    circuit = Circuit(open_seconds=2.0, clock=clock)
    assert circuit.allow() and circuit.allow()  # closed: every connect may go
    assert circuit.failed("refused") is True
    assert not circuit.allow()
    clock.advance(1.9)
    assert not circuit.allow() and circuit.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert circuit.allow()  # the probe
    assert not circuit.allow()  # the others still fail fast while it runs
    assert circuit.failed("refused") is False  # the probe failed: open again, not "newly"
    clock.advance(1.0)
    assert not circuit.allow()
    clock.advance(1.0)
    assert circuit.allow()
    assert circuit.succeeded() is True  # the probe connected: closed
    assert circuit.allow() and circuit.allow() and circuit.retry_in() == 0.0
    assert circuit.succeeded() is False


def test_a_hung_probe_lets_one_more_through_a_period_later() -> None:
    clock = FakeClock()
    circuit = Circuit(open_seconds=2.0, clock=clock)
    circuit.failed("timeout")
    clock.advance(2.0)
    assert circuit.allow()  # this probe never reports back (a connect timeout)
    clock.advance(1.0)
    assert not circuit.allow()
    clock.advance(1.0)
    assert circuit.allow()


def test_circuits_are_per_database_and_say_why_they_fail_fast() -> None:
    clock = FakeClock()
    circuits = Circuits(clock, open_seconds=2.0)
    circuits.before_connect("shard_1")
    circuits._circuits["shard_1"].failed("OperationalError: connection refused")
    with pytest.raises(CircuitOpen) as caught:
        circuits.before_connect("shard_1")
    assert "shard_1" in str(caught.value) and "connection refused" in str(caught.value)
    circuits.before_connect("shard_0")  # another shard is untouched
    state = circuits.state()
    assert state["shard_1"]["open"] is True and state["shard_0"]["open"] is False
    clock.advance(2.0)
    circuits.before_connect("shard_1")  # the probe may go


def test_only_postgresql_databases_get_the_circuit_engine() -> None:
    databases = {
        "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "d"},
        "shard_0": {"ENGINE": "django.db.backends.sqlite3", "NAME": "s"},
    }
    wrapped = with_circuits(databases)
    assert wrapped["default"]["ENGINE"] == ENGINE
    assert wrapped["shard_0"] == databases["shard_0"]
    assert databases["default"]["ENGINE"] == "django.db.backends.postgresql"  # not mutated
