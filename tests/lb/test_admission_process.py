"""Admission through the real lb: bursts, shared limits across processes, spoofing, Redis loss.

Real `python -m lb` processes in front of fake backends, real Redis servers, real sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ops.servers import RedisServer
from tests.lb.conftest import LbProcess

pytestmark = [pytest.mark.processes, pytest.mark.slow]


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


async def fetch_all(
    url: str, n: int, *, method: str = "GET", headers: Iterable[dict[str, str]] | None = None
) -> list[Answer]:
    """`n` requests at once, each on its own connection (a burst, not a queue)."""
    heads = list(headers) if headers is not None else [{}] * n
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(head: dict[str, str]) -> Answer:
            async with session.request(method, url, headers=head) as resp:
                return Answer(resp.status, dict(resp.headers), await resp.read())

        return await asyncio.gather(*(one(head) for head in heads))


def admitted(answers: list[Answer]) -> int:
    return sum(a.status == 200 for a in answers)


def wait_until(predicate: Callable[[], bool], within: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"condition not met within {within} s")
        time.sleep(0.05)
    return time.monotonic() - started


def mode(lb: LbProcess) -> str:
    return str(lb.status()["admission"]["mode"])


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


LIMIT_5_1 = {"BUCKET_CAPACITY": "5", "LEAK_RATE": "1"}


@pytest.mark.parametrize("store", ["local", pytest.param("redis", marks=pytest.mark.redis)])
def test_burst_of_twenty_admits_five_then_recovers(
    store: str,
    fake_backends: Callable[[int], list[Any]],
    lb_process: Callable[..., LbProcess],
    request: pytest.FixtureRequest,
) -> None:
    (backend,) = fake_backends(1)
    env = {**LIMIT_5_1, "LB_BACKENDS": backend.url}
    if store == "redis":
        env["REDIS_URL"] = request.getfixturevalue("fresh_redis").url
    lb = lb_process(env)
    assert mode(lb) == store
    url = f"{lb.url}/api/tours/"

    burst = asyncio.run(fetch_all(url, 20))
    assert admitted(burst) == 5
    rejected = [a for a in burst if a.status != 200]
    assert {a.status for a in rejected} == {429}
    assert all(a.headers["Retry-After"] == "1" for a in rejected)
    assert all(a.json()["code"] == "rate_limited" and a.json()["detail"] for a in rejected)
    assert all(a.headers["RateLimit-Policy"] == '"default";q=5;w=5' for a in burst)
    assert all(a.headers["RateLimit"].startswith('"default";r=') for a in burst)
    # draft-11: r is the quota left, t the seconds until the bucket is empty (5 units at 1/s)
    assert {a.headers["RateLimit"] for a in rejected} == {'"default";r=0;t=5'}

    time.sleep(1.05)  # Retry-After seconds later
    assert admitted(asyncio.run(fetch_all(url, 1))) == 1
    time.sleep(5.1)  # the bucket drains empty
    assert admitted(asyncio.run(fetch_all(url, 20))) == 5
    metrics = lb.metrics_text()
    assert metric_value(metrics, "lb_admission_admitted_total", rule="default") == 11
    assert metric_value(metrics, "lb_admission_rejected_total", rule="default") == 30
    admission_lines = [line for line in metrics.splitlines() if "lb_admission" in line]
    assert admission_lines and not any("127.0.0.1" in line for line in admission_lines)
    assert lb.status()["top_rejected"][0] == ["127.0.0.1", 30]


@pytest.mark.redis
def test_two_lb_instances_on_one_redis_share_the_limit(
    fake_backends: Callable[[int], list[Any]],
    lb_process: Callable[..., LbProcess],
    redis_server: RedisServer,
) -> None:
    (backend,) = fake_backends(1)
    env = {**LIMIT_5_1, "LB_BACKENDS": backend.url, "REDIS_URL": redis_server.url}
    # a client address of its own on the shared session Redis, via a trusted proxy
    env["LB_TRUSTED_PROXIES"] = "127.0.0.1/32"
    first, second = lb_process(env), lb_process(env)
    head = {"X-Forwarded-For": f"198.51.100.{int(time.time()) % 250 + 1}"}

    async def split() -> list[Answer]:
        a, b = await asyncio.gather(
            fetch_all(f"{first.url}/api/tours/", 10, headers=[head] * 10),
            fetch_all(f"{second.url}/api/tours/", 10, headers=[head] * 10),
        )
        return a + b

    answers = asyncio.run(split())
    assert admitted(answers) == 5
    assert {a.status for a in answers} == {200, 429}


@pytest.mark.redis
def test_thousand_concurrent_requests_through_two_workers_never_exceed_the_limit(
    fake_backends: Callable[[int], list[Any]],
    lb_process: Callable[..., LbProcess],
    fresh_redis: RedisServer,
) -> None:
    backends = fake_backends(2)
    capacity, rate = 100, 10.0
    lb = lb_process(
        {
            "BUCKET_CAPACITY": str(capacity),
            "LEAK_RATE": str(rate),
            "LB_BACKENDS": ",".join(b.url for b in backends),
            "LB_WORKERS": "2",
            "REDIS_URL": fresh_redis.url,
            # this test is about exactness, not failure detection: allow a loaded machine
            "LB_REDIS_TIMEOUT": "2",
        }
    )
    time.sleep(1.0)  # both workers listening
    started = time.monotonic()
    answers = asyncio.run(fetch_all(f"{lb.url}/api/tours/", 1000))
    elapsed = time.monotonic() - started
    statuses = {a.status for a in answers}
    assert statuses <= {200, 429}
    leaked = rate * elapsed
    assert capacity <= admitted(answers) <= capacity + int(leaked) + 1
    assert admitted(answers) + sum(a.status == 429 for a in answers) == 1000
    # one scrape sees both workers: counts add up, the mode gauge says redis
    metrics = lb.metrics_text()
    assert metric_value(metrics, "lb_admission_admitted_total") == admitted(answers)
    assert metric_value(metrics, "lb_admission_mode", mode="redis") == 1
    assert metric_value(metrics, "lb_admission_mode", mode="local") == 0


def test_spoofed_forwarded_for_from_an_untrusted_peer_shares_one_bucket(
    fake_backends: Callable[[int], list[Any]], lb_process: Callable[..., LbProcess]
) -> None:
    (backend,) = fake_backends(1)
    # the trusted proxies are elsewhere: the local test client is an untrusted peer
    lb = lb_process({**LIMIT_5_1, "LB_BACKENDS": backend.url, "LB_TRUSTED_PROXIES": "10.0.0.0/8"})
    heads = [{"X-Forwarded-For": f"203.0.113.{i}, 10.0.0.{i}"} for i in range(20)]
    answers = asyncio.run(fetch_all(f"{lb.url}/api/tours/", 20, headers=heads))
    assert admitted(answers) == 5


def test_behind_a_trusted_proxy_clients_are_told_apart_and_cannot_forge_each_other(
    fake_backends: Callable[[int], list[Any]], lb_process: Callable[..., LbProcess]
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process({**LIMIT_5_1, "LB_BACKENDS": backend.url, "LB_TRUSTED_PROXIES": "127.0.0.1/32"})
    url = f"{lb.url}/api/tours/"
    # three distinct clients behind the proxy: a bucket each
    heads = [{"X-Forwarded-For": f"198.51.100.{i % 3 + 1}"} for i in range(30)]
    assert admitted(asyncio.run(fetch_all(url, 30, headers=heads))) == 15
    # the attacker (203.0.113.66) forges the victim's address as the leftmost entry
    forged = [{"X-Forwarded-For": "198.51.100.200, 203.0.113.66"}] * 20
    assert admitted(asyncio.run(fetch_all(url, 20, headers=forged))) == 5
    victim = [{"X-Forwarded-For": "198.51.100.200"}] * 5
    assert admitted(asyncio.run(fetch_all(url, 5, headers=victim))) == 5  # untouched


def test_register_rule_applies_while_tours_use_the_default_bucket(
    fake_backends: Callable[[int], list[Any]], lb_process: Callable[..., LbProcess]
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process({"BUCKET_CAPACITY": "20", "LEAK_RATE": "10", "LB_BACKENDS": backend.url})
    register = asyncio.run(fetch_all(f"{lb.url}/api/auth/register/", 6, method="POST"))
    assert admitted(register) == 2
    assert all(
        a.headers["RateLimit-Policy"] == '"POST /api/auth/register/";q=2;w=2' for a in register
    )
    tours = asyncio.run(fetch_all(f"{lb.url}/api/tours/", 15))
    assert admitted(tours) == 15
    assert tours[0].headers["RateLimit-Policy"] == '"default";q=20;w=2'
    time.sleep(1.05)  # one more registration per second
    assert admitted(asyncio.run(fetch_all(f"{lb.url}/api/auth/register/", 3, method="POST"))) == 1


def test_dry_run_rejects_nothing_and_counts_what_it_would(
    fake_backends: Callable[[int], list[Any]], lb_process: Callable[..., LbProcess]
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process({**LIMIT_5_1, "LB_BACKENDS": backend.url, "LB_RATE_DRY_RUN": "1"})
    answers = asyncio.run(fetch_all(f"{lb.url}/api/tours/", 20))
    assert admitted(answers) == 20
    metrics = lb.metrics_text()
    assert metric_value(metrics, "lb_admission_rejected_total", dry_run="1") == 15
    assert metric_value(metrics, "lb_admission_rejected_total", dry_run="0") == 0
    assert lb.status()["admission"]["dry_run"] is True


@pytest.mark.redis
def test_redis_killed_under_load_no_5xx_local_limits_then_shared_limits_resume(
    fake_backends: Callable[[int], list[Any]],
    lb_process: Callable[..., LbProcess],
    fresh_redis: RedisServer,
    work_dir: Path,
) -> None:
    (backend,) = fake_backends(1)
    env = {
        **LIMIT_5_1,
        "LB_BACKENDS": backend.url,
        "REDIS_URL": fresh_redis.url,
        "LB_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    first, second = lb_process(env), lb_process(env)
    url = f"{first.url}/api/tours/"

    async def load_while(kill: Callable[[], None]) -> list[Answer]:
        # bounded: 40 rounds of 10 clients, Redis killed a quarter of the way in
        answers: list[Answer] = []
        for round_no in range(40):
            heads = [{"X-Forwarded-For": f"192.0.2.{i + 1}"} for i in range(10)]
            answers += await fetch_all(url, 10, headers=heads)
            if round_no == 10:
                kill()
        return answers

    answers = asyncio.run(load_while(fresh_redis.kill))
    assert {a.status for a in answers} <= {200, 429}  # never a 5xx
    assert mode(first) == "local"
    metrics = first.metrics_text()
    assert metric_value(metrics, "lb_admission_mode", mode="local") == 1
    assert metric_value(metrics, "lb_admission_redis_errors_total") >= 1
    # local limits apply meanwhile
    local = [{"X-Forwarded-For": "198.51.100.7"}] * 20
    assert admitted(asyncio.run(fetch_all(url, 20, headers=local))) == 5

    restarted = RedisServer(work_dir / "redis-back", port=fresh_redis.port).start()
    try:
        took = wait_until(lambda: mode(first) == "redis" and mode(second) == "redis", within=10)
        assert took < 5
        # shared again: a burst split across both lbs admits the capacity once
        head = [{"X-Forwarded-For": "198.51.100.8"}] * 10

        async def split() -> list[Answer]:
            a, b = await asyncio.gather(
                fetch_all(url, 10, headers=head),
                fetch_all(f"{second.url}/api/tours/", 10, headers=head),
            )
            return a + b

        assert admitted(asyncio.run(split())) == 5
    finally:
        restarted.stop()


@pytest.mark.parametrize(("policy", "status"), [("closed", 503), ("open", 200)])
def test_without_redis_the_policy_decides_and_nothing_is_a_500(
    policy: str,
    status: int,
    fake_backends: Callable[[int], list[Any]],
    lb_process: Callable[..., LbProcess],
) -> None:
    from tests.support.net import free_port

    (backend,) = fake_backends(1)
    lb = lb_process(
        {
            **LIMIT_5_1,
            "LB_BACKENDS": backend.url,
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "LB_REDIS_FAILURE": policy,
        }
    )
    assert mode(lb) == policy
    answers = asyncio.run(fetch_all(f"{lb.url}/api/tours/", 10))
    assert {a.status for a in answers} == {status}
    if policy == "closed":
        assert answers[0].json()["code"] == "admission_unavailable"
        assert answers[0].headers["Retry-After"] == "1"
