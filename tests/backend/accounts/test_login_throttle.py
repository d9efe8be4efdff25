"""Credential stuffing: failed logins back off exponentially per account and per address, with
429 + Retry-After, the same answers for unknown accounts, on the API and on /admin/login/;
two replicas share the state through Redis."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
import requests

from tests.backend.conftest import STAFF_PASSWORD, USER_PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.processes]

FREE = 5
GUARD_ENV = {
    "LOGIN_FREE_FAILURES": str(FREE),
    "LOGIN_ADDRESS_FREE_FAILURES": "40",
    "LOGIN_BACKOFF_BASE_SECONDS": "1",
    "LOGIN_BACKOFF_MAX_SECONDS": "8",
}


@pytest.fixture(scope="module")
def base(module_replicas: Any) -> str:
    return str(module_replicas(1, extra_env=GUARD_ENV)[0])


def _login(base: str, username: str, password: str, address: str) -> requests.Response:
    return requests.post(
        f"{base}/api/auth/token/",
        json={"username": username, "password": password},
        headers={"X-Real-IP": address},
        timeout=30,
    )


def _answer(resp: requests.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["code"]


def test_twenty_wrong_passwords_get_429_then_the_right_one_works_after_the_wait(
    base: str, api_client: Any
) -> None:
    victim = api_client.user(base)
    bystander = api_client.user(base)
    name = victim.user["username"]
    address = "10.1.0.1"

    answers = [_login(base, name, "wrong-password", address) for _ in range(20)]
    statuses = [r.status_code for r in answers]
    assert statuses[:FREE] == [401] * FREE, statuses
    limited = [r for r in answers if r.status_code == 429]
    assert limited, statuses
    for resp in limited:
        assert resp.json()["code"] == "login_throttled"
        assert int(resp.headers["Retry-After"]) >= 1
    # a locked account is refused before its password is looked at: the right one too
    locked = _login(base, name, USER_PASSWORD, address)
    assert locked.status_code == 429
    wait = int(locked.headers["Retry-After"])
    assert wait <= int(GUARD_ENV["LOGIN_BACKOFF_MAX_SECONDS"])

    # another account, from the same address, is not affected
    assert _login(base, bystander.user["username"], USER_PASSWORD, address).status_code == 200

    time.sleep(wait + 0.2)
    ok = _login(base, name, USER_PASSWORD, address)
    assert ok.status_code == 200, ok.text
    assert set(ok.json()) == {"access", "refresh"}
    # success cleared the record: the next failure is a free one again
    assert _login(base, name, "wrong-password", address).status_code == 401


def test_the_lock_doubles_with_each_failure_after_the_free_ones(base: str, api_client: Any) -> None:
    name = api_client.user(base).user["username"]
    address = "10.1.0.2"
    for _ in range(FREE):
        assert _login(base, name, "nope", address).status_code == 401
    waits = []
    for _ in range(3):
        assert _login(base, name, "nope", address).status_code == 401  # checked, failed: locks
        locked = _login(base, name, "nope", address)
        assert locked.status_code == 429
        waits.append(int(locked.headers["Retry-After"]))
        time.sleep(waits[-1] + 0.2)
    assert waits == [1, 2, 4]


def test_unknown_accounts_get_exactly_the_same_answers(base: str, api_client: Any) -> None:
    """No user enumeration: neither the 401 nor the back-off tells a real account apart."""
    real = api_client.user(base).user["username"]
    unknown = f"nobody{uuid.uuid4().hex[:8]}"
    seen = {}
    for name, address in ((real, "10.1.0.3"), (unknown, "10.1.0.4")):
        seen[name] = [_answer(_login(base, name, "wrong-password", address)) for _ in range(8)]
    assert seen[real] == seen[unknown]
    assert seen[real][0] == (401, "no_active_account")
    assert (429, "login_throttled") in seen[real]


def test_one_address_trying_many_accounts_is_held_back_alone(module_replicas: Any) -> None:
    (base,) = module_replicas(1, extra_env={**GUARD_ENV, "LOGIN_ADDRESS_FREE_FAILURES": "6"})
    stuffer, other = "10.2.0.1", "10.2.0.2"
    statuses = [
        _login(base, f"victim{i}-{uuid.uuid4().hex[:6]}", "guess", stuffer).status_code
        for i in range(9)
    ]
    assert statuses[:6] == [401] * 6 and 429 in statuses, statuses
    # the same (never locked) account names from another address are answered normally
    assert _login(base, f"victim0-{uuid.uuid4().hex[:6]}", "guess", other).status_code == 401
    # an IPv6 client counts by its /64: a new address in the same /64 is the same client
    v6 = [_login(base, f"v6-{i}", "guess", f"2001:db8:1:2::{i + 1}").status_code for i in range(9)]
    assert 429 in v6, v6


@pytest.mark.redis
def test_replicas_share_the_back_off_through_redis(
    module_replicas: Any, module_backend_env: dict[str, str], fresh_redis: Any, api_client: Any
) -> None:
    first, second = module_replicas(
        2, extra_env={**GUARD_ENV, "REDIS_URL": fresh_redis.url, "CACHE_KEY_PREFIX": "guard"}
    )
    name = api_client.user(first).user["username"]
    address = "10.3.0.1"
    for i in range(FREE + 1):
        assert _login([first, second][i % 2], name, "wrong", address).status_code == 401
    locked = _login(second, name, USER_PASSWORD, address)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1


def _admin_post(session: requests.Session, base: str, username: str, password: str) -> Any:
    page = session.get(f"{base}/admin/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    return session.post(
        f"{base}/admin/login/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": username,
            "password": password,
            "next": "/admin/",
        },
        headers={"X-Real-IP": "10.4.0.1", "Referer": f"{base}/admin/login/"},
        allow_redirects=False,
        timeout=30,
    )


def test_admin_login_backs_off_too(
    base: str, module_backend_env: dict[str, str], api_client: Any
) -> None:
    api_client.staff(base, module_backend_env, username="guarded-staff")
    session = requests.Session()
    answers = [
        _admin_post(session, base, "guarded-staff", "wrong").status_code for _ in range(FREE + 2)
    ]
    assert answers[:FREE] == [200] * FREE and answers[-1] == 429, answers
    locked = _admin_post(session, base, "guarded-staff", STAFF_PASSWORD)
    assert locked.status_code == 429
    wait = int(locked.headers["Retry-After"])
    time.sleep(wait + 0.2)
    ok = _admin_post(session, base, "guarded-staff", STAFF_PASSWORD)
    assert ok.status_code == 302 and ok.headers["Location"] == "/admin/"
