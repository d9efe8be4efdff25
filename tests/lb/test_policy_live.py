"""SREs retune admission live: a PUT reaches every worker and every lb on the Redis in < 1 s,
under load, without a failed request; a bad PUT changes nothing; writes need the token.

Real `python -m lb` processes (a master with 2 workers, and a second lb), a real Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from ops.servers import RedisServer
from tests.lb.conftest import FakeBackend, LbProcess
from tests.lb.load import admin_call, open_loop
from tests.lb.test_workers import all_workers_up

pytestmark = [pytest.mark.processes]

TOKEN = "test-admin-token-0123456789"
ROOMY = {"BUCKET_CAPACITY": "100000", "LEAK_RATE": "100000", "LB_RATE_RULES": ""}


def policy_header(capacity: int, rate: int = 100000) -> str:
    return f'"default";q={capacity};w={max(1, -(-capacity // rate))}'


@pytest.mark.redis
@pytest.mark.slow
def test_a_put_reaches_every_worker_and_the_other_lb_within_a_second_under_load(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
    fresh_redis: RedisServer,
) -> None:
    (backend,) = fake_backends(1)
    env = {
        **ROOMY,
        "LB_BACKENDS": backend.url,
        "REDIS_URL": fresh_redis.url,
        "LB_ADMIN_TOKEN": TOKEN,
        # this test is about the policy, not about Redis latency on a loaded machine
        "LB_REDIS_TIMEOUT": "1",
    }
    first = lb_process({**env, "LB_WORKERS": "2"})
    second = lb_process({**env, "LB_WORKERS": "1"})
    assert len(asyncio.run(all_workers_up(first, 2))) == 2
    lbs = [first.url, second.url]
    put: dict[str, Any] = {}

    async def scenario() -> list[Any]:
        load = asyncio.create_task(
            open_loop(lambda i: f"{lbs[i % 2]}/api/tours/?i={i}", rate=80, seconds=5)
        )
        await asyncio.sleep(1.5)
        put["sent"] = time.monotonic()
        put["answer"] = await asyncio.to_thread(
            admin_call,
            f"{first.admin_url}/admission/rules",
            "PUT",
            {"bucket_capacity": 90000},
            TOKEN,
        )
        put["answered"] = time.monotonic()
        return await load

    results = asyncio.run(scenario())
    status, body = put["answer"]
    assert status == 200, body
    assert body["bucket_capacity"] == 90000 and body["version"] >= 1 and body["scope"] == "fleet"
    assert [r for r in results if r.failed] == []
    assert {r.status for r in results} == {200}
    before = [r for r in results if r.sent < put["sent"]]
    after = [r for r in results if r.sent >= put["sent"] + 1.0]
    # (a request sent just before the PUT may be handled just after it: either header)
    assert before and {r.policy for r in before} <= {policy_header(100000), policy_header(90000)}
    assert before[0].policy == policy_header(100000)
    # every response to a request sent a second after the PUT, from either lb and whichever
    # worker took the connection, announces the new capacity
    assert len(after) > 100
    assert {r.policy for r in after} == {policy_header(90000)}
    # every process says so too, the second lb included
    for lb in (first, second):
        code, view = admin_call(f"{lb.admin_url}/admission/rules")
        assert code == 200
        assert (view["version"], view["bucket_capacity"]) == (body["version"], 90000)
        assert view["set_by"].startswith("tests@")
    time.sleep(0.6)  # workers publish their status every 0.5 s
    _, view = admin_call(f"{first.admin_url}/admission/rules")
    assert len(view["workers"]) == 2 and view["converged"] is True
    metrics = first.metrics_text()
    assert f"lb_admission_policy_version {float(body['version'])}" in metrics


def test_a_bad_put_is_a_400_naming_the_field_and_the_old_policy_stays(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process(
        {**ROOMY, "LB_BACKENDS": backend.url, "LB_WORKERS": "2", "LB_ADMIN_TOKEN": TOKEN}
    )
    assert len(asyncio.run(all_workers_up(lb, 2))) == 2
    rules = f"{lb.admin_url}/admission/rules"
    _, before = admin_call(rules)
    assert before["version"] == 0 and before["set_by"] == "environment"

    # writes need the token; reads do not
    assert admin_call(rules, "PUT", {"bucket_capacity": 5})[0] == 401
    status, body = admin_call(rules, "PUT", {"bucket_capacity": 5}, "wrong-token-wrong-token")
    assert (status, body["code"]) == (401, "unauthorized")
    for bad, field in (
        ({"rules": "POST /api/auth/register/=2"}, "rules"),
        ({"rules": "FETCH /x=1/1"}, "rules"),
        ({"bucket_capacity": 0}, "bucket_capacity"),
        ({"bucket_capacity": "many"}, "bucket_capacity"),
        ({"leak_rate": -1}, "leak_rate"),
        ({"dry_run": "maybe"}, "dry_run"),
        ({"bucket_capacity": 5, "burst": 3}, "burst"),
    ):
        status, body = admin_call(rules, "PUT", bad, TOKEN)
        assert status == 400, (bad, body)
        assert body["field"] == field and body["detail"].startswith(field)
        assert body["code"] == "invalid_field"
    # a valid field next to a bad one changed nothing either
    status, _ = admin_call(rules, "PUT", {"bucket_capacity": 7, "leak_rate": "fast"}, TOKEN)
    assert status == 400
    _, after = admin_call(rules)
    assert {k: after[k] for k in before if k not in ("workers", "converged")} == {
        k: before[k] for k in before if k not in ("workers", "converged")
    }
    answers = asyncio.run(open_loop(lambda i: f"{lb.url}/x/{i}", rate=50, seconds=1))
    assert {r.policy for r in answers} == {policy_header(100000)}

    # without Redis a good PUT reaches both workers of this lb through the master
    status, body = admin_call(rules, "PUT", {"bucket_capacity": 90000, "dry_run": True}, TOKEN)
    assert status == 200 and body["scope"] == "this lb" and body["version"] == 1
    answers = asyncio.run(open_loop(lambda i: f"{lb.url}/x/{i}", rate=50, seconds=1))
    assert {r.policy for r in answers} == {policy_header(90000)}
    status, reset = admin_call(rules, "DELETE", None, TOKEN)
    assert status == 200 and reset["version"] == 2 and reset["bucket_capacity"] == 100000
    answers = asyncio.run(open_loop(lambda i: f"{lb.url}/x/{i}", rate=50, seconds=1))
    assert {r.policy for r in answers} == {policy_header(100000)}
    assert "audit: admission policy set by tests@127.0.0.1: v0 -> v1" in lb.process.log()


def test_the_status_page_shows_the_policy_and_its_form_changes_it_with_the_token(
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    (backend,) = fake_backends(1)
    lb = lb_process({**ROOMY, "LB_BACKENDS": backend.url, "LB_ADMIN_TOKEN": TOKEN})
    with urllib.request.urlopen(f"{lb.admin_url}/status?format=html", timeout=5) as resp:
        page = resp.read().decode()
    assert "admission policy v0" in page and "/admission/rules?format=html" in page
    with urllib.request.urlopen(f"{lb.admin_url}/admission/rules?format=html", timeout=5) as resp:
        form = resp.read().decode()
    assert 'name="bucket_capacity" value="100000"' in form and 'name="token"' in form

    def submit(fields: dict[str, str]) -> int:
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(f"{lb.admin_url}/admission/rules", data=data)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)  # after the 303 back to the form
        except urllib.error.HTTPError as exc:
            return exc.code

    fields = {"bucket_capacity": "90000", "leak_rate": "100000", "rules": ""}
    assert submit({**fields, "token": "not-the-token-at-all"}) == 401
    assert admin_call(f"{lb.admin_url}/admission/rules")[1]["version"] == 0
    assert submit({**fields, "token": TOKEN}) == 200
    _, view = admin_call(f"{lb.admin_url}/admission/rules")
    assert (view["version"], view["bucket_capacity"], view["dry_run"]) == (1, 90000, False)
    # drain and restore are admin writes too
    name = backend.url.removeprefix("http://")
    assert admin_call(f"{lb.admin_url}/backends/{name}/drain", "POST", {})[0] == 401
    assert admin_call(f"{lb.admin_url}/backends/{name}/drain", "POST", {}, TOKEN)[0] == 200
    assert admin_call(f"{lb.admin_url}/backends/{name}/restore", "POST", {}, TOKEN)[0] == 200
