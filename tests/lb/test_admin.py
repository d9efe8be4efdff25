"""The admin listener: /healthz, /metrics matching the traffic, /status JSON and HTML, drain."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lb.conftest import FakeBackend, LbProcess

pytestmark = [pytest.mark.processes]

OPEN_ADMISSION = {"BUCKET_CAPACITY": "1000000", "LEAK_RATE": "1000000", "LB_RATE_RULES": ""}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` in a Prometheus text exposition."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.append((sample.labels, sample.value))
    return found


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        value
        for got, value in samples(text, name)
        if all(got.get(k) == v for k, v in labels.items())
    )


def oversized_head(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
        return sock.recv(65536)


async def test_metrics_parse_and_count_the_traffic(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    backends = fake_backends(2)
    lb = lb_process(
        {**OPEN_ADMISSION, "LB_BACKENDS": ",".join(b.url for b in backends), "LB_MAX_RETRIES": "0"}
    )
    async with aiohttp.ClientSession() as session:
        for i in range(20):
            async with session.get(f"{lb.url}/ok/{i}") as resp:
                assert resp.status == 200
        for _ in range(4):
            async with session.get(f"{lb.url}/missing?status=404") as resp:
                assert resp.status == 404
        async with session.post(f"{lb.url}/boom?reset=1", data=b"x") as resp:
            assert resp.status == 502
    for _ in range(2):
        assert b" 431 " in oversized_head(lb.port)

    text = lb.metrics_text()
    names = {b.name: f"127.0.0.1:{b.port}" for b in backends}
    assert total(text, "lb_requests_total") == 27
    assert total(text, "lb_requests_total", code_class="2xx") == 20
    assert total(text, "lb_requests_total", code_class="4xx") == 6
    assert total(text, "lb_requests_total", code_class="4xx", backend="none") == 2
    assert total(text, "lb_requests_total", code_class="5xx", backend="none") == 1
    per_backend = [total(text, "lb_requests_total", backend=n) for n in names.values()]
    assert sum(per_backend) == 24 and min(per_backend) > 0
    assert total(text, "lb_request_duration_seconds_count") == 27
    assert total(text, "lb_lb_errors_total", code="headers_too_large") == 2
    assert total(text, "lb_lb_errors_total", code="bad_gateway") == 1
    assert total(text, "lb_in_flight_requests") == 0
    for name in names.values():
        assert total(text, "lb_backend_healthy", backend=name) == 1
        assert total(text, "lb_backend_breaker_state", backend=name) == 0
        assert total(text, "lb_backend_outstanding_requests", backend=name) == 0
    # families that exist before anything happened to them, and nothing did
    assert "lb_upstream_retries" in text and "lb_backend_ejections" in text
    assert total(text, "lb_upstream_retries_total") == 0  # LB_MAX_RETRIES=0
    assert total(text, "lb_backend_ejections_total") == 0  # one failure ejects nobody
    # every request that reached admission was admitted, none rejected; the buckets are local
    assert total(text, "lb_admission_admitted_total") == 25
    assert total(text, "lb_admission_rejected_total") == 0
    modes = {labels["mode"]: value for labels, value in samples(text, "lb_admission_mode")}
    assert modes["local"] == 1 and sum(modes.values()) == 1, modes


async def test_status_json_html_drain_and_restore(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    b0, b1 = fake_backends(2)
    lb = lb_process({**OPEN_ADMISSION, "LB_BACKENDS": f"{b0.url},{b1.url}"})
    name0 = f"127.0.0.1:{b0.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{lb.admin_url}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True

        async def spread(n: int) -> Counter[str]:
            seen: Counter[str] = Counter()
            for _ in range(n):
                async with session.get(f"{lb.url}/where") as resp:
                    seen[(await resp.json())["backend"]] += 1
            return seen

        assert set(await spread(10)) == {"b0", "b1"}

        async with session.post(f"{lb.admin_url}/backends/{name0}/drain") as resp:
            assert resp.status == 200
            assert await resp.json() == {"backend": name0, "drained": True}
        assert await spread(10) == Counter({"b1": 10})
        status = lb.status()
        row = next(r for r in status["backends"] if r["name"] == name0)
        assert row["drained"] is True and row["eligible"] is False
        assert status["answered"][name0] + status["answered"][f"127.0.0.1:{b1.port}"] == 20
        # bodiless GETs on kept-alive backend connections: the fast path answered most
        assert 0 < status["fast_path"]["relayed"] <= status["fast_path"]["taken"] <= 20

        async with session.post(f"{lb.admin_url}/backends/{name0}/restore") as resp:
            assert (await resp.json())["drained"] is False
        assert (await spread(10))["b0"] > 0

        async with session.post(f"{lb.admin_url}/backends/10.9.9.9:1/drain") as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == "unknown_backend"

        async with session.get(f"{lb.admin_url}/status", headers={"Accept": "text/html"}) as resp:
            assert resp.content_type == "text/html"
            page = await resp.text()
        assert "<table" in page and name0 in page and f"127.0.0.1:{b1.port}" in page

        # the public port never serves admin endpoints: they go to a backend like any path
        for path in ("/metrics", "/status", "/healthz"):
            async with session.get(f"{lb.url}{path}") as resp:
                body = await resp.json()
                assert body["backend"] in ("b0", "b1") or body.get("ok") is True
        async with session.post(f"{lb.url}/backends/{name0}/drain") as resp:
            assert (await resp.json())["backend"] in ("b0", "b1")
        assert all(not r["drained"] for r in lb.status()["backends"])


def test_status_board_merges_workers_and_meters_recent_rates() -> None:
    from lb.status import RateMeter, StatusBoard, render_html

    now = [100.0]
    meter = RateMeter(clock=lambda: now[0])
    assert meter.sample({"a": 0}) == {"a": 0.0}
    now[0] += 2
    assert meter.sample({"a": 50, "none": 4}) == {"a": 25.0, "none": 2.0}
    # ticks every 0.5 s at 10 answers a second: the early burst leaves the window
    count = 50
    for _ in range(40):
        now[0] += 0.5
        count += 5
        rates = meter.sample({"a": count, "none": 4})
    assert rates == {"a": 10.0, "none": 0.0}

    def row(**kw: object) -> dict[str, object]:
        base = {
            "name": "b:1",
            "healthy": True,
            "eligible": True,
            "drained": False,
            "breaker": "closed",
            "outstanding": 1,
            "requests": 10,
            "failures": 0,
            "ejections": 0,
            "ejected_until": None,
        }
        return {**base, **kw}

    merged = StatusBoard().combine(
        [
            {
                "pid": 1,
                "in_flight": 2,
                "answered": {"b:1": 5},
                "rates": {"b:1": 1.5},
                "backends": [row()],
            },
            {
                "pid": 2,
                "in_flight": 1,
                "answered": {"b:1": 7},
                "rates": {"b:1": 2.0},
                "backends": [
                    row(
                        healthy=False,
                        eligible=False,
                        breaker="half_open",
                        outstanding=3,
                        ejected_until=4.0,
                    )
                ],
            },
        ]
    )
    (b,) = merged["backends"]
    assert (b["healthy"], b["eligible"], b["breaker"]) == (False, False, "half_open")
    assert (b["outstanding"], b["requests"], b["ejected_until"]) == (4, 20, 4.0)
    assert b["rate_per_second"] == 3.5 and merged["rate_per_second"] == 3.5
    assert merged["in_flight"] == 3 and merged["answered"] == {"b:1": 12}
    assert [w["answered"] for w in merged["per_worker"]] == [5, 7]
    page = render_html(merged)
    assert "b:1" in page and "half_open" in page and "3.5" in page
