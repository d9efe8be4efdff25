"""The hot path's tail and bookkeeping, on uvloop as the lb runs: a burst of new connections is
accepted at once however busy the loop is, a closed connection is freed without the garbage
collector, the admitter's latency sample leaves out the lb's own work, and the per-request
counts batched in plain ints reach a scrape whole."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import weakref
from typing import Any

import uvloop
from prometheus_client import CollectorRegistry

from lb.config import Address
from lb.http.connection import ClientConnection, ClientLimits
from lb.http.request import Request
from lb.http.upstream import LATENCY_FLOOR, UpstreamConnection
from lb.metrics import LATENCY_BUCKETS, Metrics
from lb.server import Server, listen_socket

BURST = 100


async def never_called(request: Request, client: ClientConnection) -> bool:
    raise AssertionError("no request is sent")


def busy_iterations(count: int, seconds: float) -> Any:
    """`count` event-loop iterations that each hold the loop for `seconds`, as a saturated
    lb's iterations do (10-40 ms each under wrk)."""

    async def run() -> None:
        for _ in range(count):
            time.sleep(seconds)  # noqa: ASYNC251 - the loop's work of one iteration, on purpose
            await asyncio.sleep(0)

    return run()


def test_a_burst_of_connections_is_accepted_at_once_on_a_busy_loop() -> None:
    # libuv accepts one connection per loop iteration: 100 new clients on a loop whose
    # iterations last 10 ms waited up to a second (the bench's p99 at 256 connections)
    async def main() -> int:
        loop = asyncio.get_running_loop()
        sock = listen_socket(Address("127.0.0.1", 0), reuse_port=False)
        server = Server(never_called, ClientLimits(), loop=loop)
        await server.start(sock)
        port = sock.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
        try:
            await busy_iterations(5, 0.01)
            return len(server.connections)
        finally:
            server.stop_accepting()
            server.abort_all()
            for client in clients:
                client.close()
            await server.deadlines.close()

    assert uvloop.run(main()) == BURST


def test_a_closed_connection_is_freed_by_reference_counting() -> None:
    # a parser or transport left pointing back at its protocol made every closed connection
    # cyclic garbage: collections then took 20-60 ms each under load
    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        sock = listen_socket(Address("127.0.0.1", 0), reuse_port=False)
        server = Server(never_called, ClientLimits(), loop=loop)
        await server.start(sock)
        upstream_side = socket.socket()
        upstream_side.bind(("127.0.0.1", 0))
        upstream_side.listen(1)
        client = socket.create_connection(("127.0.0.1", sock.getsockname()[1]))
        _, upstream = await loop.create_connection(
            lambda: UpstreamConnection(loop), "127.0.0.1", upstream_side.getsockname()[1]
        )
        for _ in range(50):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        (conn,) = server.connections
        client_ref, upstream_ref = weakref.ref(conn), weakref.ref(upstream)
        upstream.begin()  # a parser pointing back at the connection
        del conn
        client.close()
        upstream.close()
        del upstream
        for _ in range(50):
            if client_ref() is None and upstream_ref() is None:
                break
            await asyncio.sleep(0.01)
        gone = client_ref() is None, upstream_ref() is None
        server.stop_accepting()
        upstream_side.close()
        await server.deadlines.close()
        return gone

    gc.collect()
    gc.disable()
    try:
        assert uvloop.run(main()) == (True, True)
    finally:
        gc.enable()


RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def answered_after(wait: Any) -> float:
    async def main() -> float:
        conn = UpstreamConnection(asyncio.get_running_loop())
        conn.begin()
        conn.sent(measure=True)
        wait()
        conn.data_received(RESPONSE)
        assert conn.head_done
        return conn.backend_latency()

    return uvloop.run(main())


def test_the_admitters_sample_leaves_out_the_lbs_own_work() -> None:
    def busy() -> None:  # the loop serving other requests while the answer waits
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass

    assert answered_after(busy) < 0.02


def test_the_admitters_sample_counts_the_time_the_backend_took() -> None:
    assert answered_after(lambda: time.sleep(0.05)) >= 0.04  # the loop idle, waiting
    assert answered_after(lambda: None) == LATENCY_FLOOR


def test_batched_request_counts_reach_a_scrape_whole() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["b1"])
    flushed: list[int] = []
    metrics.before_collect.append(lambda: (flushed.append(1), metrics.flush(3)))
    seconds = [0.0005, 0.003, 0.003, 0.2, 100.0]
    for s in seconds:
        metrics.observe("b1", 200, s)
    metrics.observe("none", 503, 0.0)
    assert metrics.pending == 6

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("lb_requests_total", code_class="2xx", backend="b1") == 5
    assert flushed and metrics.pending == 0
    assert value("lb_requests_total", code_class="5xx", backend="none") == 1
    assert value("lb_request_duration_seconds_count", backend="b1") == 5
    assert value("lb_request_duration_seconds_sum", backend="b1") == sum(seconds)
    for bound in LATENCY_BUCKETS:
        expected = sum(1 for s in seconds if s <= bound)
        le = str(float(bound)) if bound != int(bound) else f"{float(bound)}"
        assert value("lb_request_duration_seconds_bucket", backend="b1", le=le) == expected
    assert value("lb_request_duration_seconds_bucket", backend="b1", le="+Inf") == 5
    assert value("lb_in_flight_requests") == 3
    # a second scrape adds nothing twice
    assert value("lb_requests_total", code_class="2xx", backend="b1") == 5
