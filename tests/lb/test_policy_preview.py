"""The preview of a policy matches what a replay of the same traffic under it rejects.

Known traffic (heavy, medium and light clients, and searchers under a rule of their own) goes
through an lb with 2 workers on Redis under a roomy policy; the preview answers what a tighter
one would have rejected; then the tighter policy is applied and the same traffic replayed from
fresh client addresses: the 429s must agree with the preview within a few percent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from lb.admission.heavy_hitters import ArrivalLog
from lb.admission.policy import Policy
from lb.admission.preview import merge, replay
from lb.admission.rules import parse_rules
from ops.servers import RedisServer
from tests.lb.conftest import FakeBackend, LbProcess
from tests.lb.load import admin_call, open_loop
from tests.lb.test_policy_live import ROOMY, TOKEN
from tests.lb.test_workers import all_workers_up
from tests.support.clock import FakeClock

SECONDS = 6.0
# (how many clients, requests per second each, path)
CLIENTS = (
    (3, 20.0, "/api/tours/"),  # bots
    (2, 8.0, "/api/tours/"),  # eager people
    (10, 1.0, "/api/tours/"),  # everyone else
    (3, 3.0, "/api/search/"),  # searchers, under a rule of their own
)
PROPOSED = {"bucket_capacity": 10, "leak_rate": 4, "rules": "GET /api/search/=3/1", "minutes": 1}


def schedule() -> list[tuple[int, str]]:
    """(client number, path) in sending order: each client periodic at its own rate."""
    events: list[tuple[float, int, str]] = []
    number = 0
    for count, rate, path in CLIENTS:
        for _ in range(count):
            phase = (number * 0.37) % 1.0
            events += [((k + phase) / rate, number, path) for k in range(int(rate * SECONDS))]
            number += 1
    events.sort()
    return [(client, path) for _, client, path in events]


def test_replay_of_arrivals_is_exact_for_spread_traffic() -> None:
    """Pure: a client at 20/s against 10 + 4/s for 6 s keeps about 10 + 4 x 6 of 120."""
    clock = FakeClock(1000.0)
    log = ArrivalLog(clock)
    for i in range(120):
        clock.now = 1000.0 + i / 20
        log.add("bot", "GET", "/api/tours/")
    for i in range(6):
        clock.now = 1000.0 + i
        log.add("person", "GET", "/api/tours/")
    result = replay(log.since(60), Policy(10, 4.0, ()))
    assert result["requests"] == 126 and result["clients"] == 2
    assert result["clients_rejected"] == 1 and result["top_rejected"][0][0] == "bot"
    assert 120 - (10 + 4 * 6) - 2 <= result["requests_rejected"] <= 120 - (10 + 4 * 6) + 2
    # the search rule takes its own requests; merging two workers' records is one client
    one = (1000, "GET", "/s/", 5, 1000.0, 1000.5)
    split = merge([{"c": [one]}, {"c": [one]}])
    assert replay(split, Policy(100, 1.0, parse_rules("GET /s/=3/1")))["requests_rejected"] == 7


@pytest.mark.processes
@pytest.mark.redis
@pytest.mark.slow
def test_the_preview_matches_a_replay_under_the_proposed_policy(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
    fresh_redis: RedisServer,
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process(
        {
            **ROOMY,
            "LB_BACKENDS": backend.url,
            "LB_WORKERS": "2",
            "REDIS_URL": fresh_redis.url,
            "LB_REDIS_TIMEOUT": "1",
            "LB_TRUSTED_PROXIES": "127.0.0.1/32",
            "LB_ADMIN_TOKEN": TOKEN,
        }
    )
    assert len(asyncio.run(all_workers_up(lb, 2))) == 2
    plan = schedule()
    rate = len(plan) / SECONDS

    def send(network: str) -> list[Any]:
        return asyncio.run(
            open_loop(
                lambda i: f"{lb.url}{plan[i][1]}",
                rate=rate,
                seconds=SECONDS,
                headers=lambda i: {"X-Forwarded-For": f"{network}.{plan[i][0] + 1}"},
            )
        )

    first = send("198.51.100")
    assert {r.status for r in first} == {200}  # roomy: nothing rejected yet
    status, preview = admin_call(f"{lb.admin_url}/admission/rules/preview", "POST", PROPOSED, TOKEN)
    assert status == 200, preview
    assert preview["requests"] == len(plan)
    assert preview["clients"] == sum(count for count, _, _ in CLIENTS)

    policy = {k: v for k, v in PROPOSED.items() if k != "minutes"}
    assert admin_call(f"{lb.admin_url}/admission/rules", "PUT", policy, TOKEN)[0] == 200
    second = send("203.0.113")  # the same traffic from fresh addresses: empty buckets
    assert [r for r in second if r.failed] == []
    rejected = [r for r in second if r.status == 429]
    clients = {plan[r.index][0] for r in rejected}
    share = len(rejected) / len(second)
    assert abs(preview["share_rejected"] - share) <= 0.03, (preview, share)
    assert abs(preview["requests_rejected"] - len(rejected)) <= 0.05 * len(second)
    # bots, eager people and searchers are rejected; everyone else is not
    assert preview["clients_rejected"] == len(clients) == 8
