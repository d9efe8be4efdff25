"""Registration and JWT auth against a real replica: bad tokens get 401, refresh rotates (and
reusing a rotated token revokes its whole family), logout revokes the session's tokens."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
import requests

from tests.backend.conftest import TEST_SECRET_KEY, USER_PASSWORD, Api, login

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


@pytest.fixture(scope="module")
def base(module_replicas: Any) -> str:
    return str(module_replicas(1)[0])


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _me(base: str, token: str) -> requests.Response:
    return requests.get(
        f"{base}/api/auth/me/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_register_returns_the_user_and_rejects_bad_input_with_field_errors(base: str) -> None:
    name = f"reg{uuid.uuid4().hex[:8]}"
    ok = requests.post(
        f"{base}/api/auth/register/",
        json={"username": name, "email": f"{name}@example.com", "password": USER_PASSWORD},
        timeout=30,
    )
    assert ok.status_code == 201
    assert set(ok.json()) == {"id", "username", "email"} and ok.json()["username"] == name

    again = requests.post(
        f"{base}/api/auth/register/",
        json={"username": name.upper(), "email": "x@example.com", "password": USER_PASSWORD},
        timeout=30,
    )
    assert again.status_code == 400 and "username" in again.json()["errors"]

    weak = requests.post(
        f"{base}/api/auth/register/",
        json={"username": f"w{name}", "email": "not-an-email", "password": "12345"},
        timeout=30,
    )
    assert weak.status_code == 400
    errors = weak.json()["errors"]
    assert "email" in errors
    weak = requests.post(
        f"{base}/api/auth/register/",
        json={"username": f"w{name}", "email": "w@example.com", "password": "12345"},
        timeout=30,
    )
    assert weak.status_code == 400 and weak.json()["errors"]["password"]  # Django's validators
    missing = requests.post(f"{base}/api/auth/register/", json={}, timeout=30)
    assert missing.status_code == 400
    assert {"username", "email", "password"} <= set(missing.json()["errors"])


def test_token_needs_the_right_password(base: str, api_client: Any) -> None:
    user = api_client.user(base)
    resp = requests.post(
        f"{base}/api/auth/token/",
        json={"username": user.user["username"], "password": "wrong-password"},
        timeout=30,
    )
    assert resp.status_code == 401 and resp.json()["code"] == "no_active_account"
    assert _me(base, user.token).json()["username"] == user.user["username"]


def test_tampered_alg_none_expired_and_foreign_tokens_get_401(base: str, api_client: Any) -> None:
    user = api_client.user(base)
    assert _me(base, user.token).status_code == 200
    header_b64, payload_b64, signature = user.token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))

    other_user = dict(payload, user_id=str(int(payload["user_id"]) + 1))
    tampered = f"{header_b64}.{_b64(other_user)}.{signature}"
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload_b64}."
    expired = jwt.encode(
        dict(payload, exp=int(time.time()) - 60, iat=int(time.time()) - 400),
        TEST_SECRET_KEY,
        "HS256",
    )
    foreign = jwt.encode(payload, "some-other-secret-key-of-another-system-123", "HS256")
    still_valid = jwt.encode(payload, TEST_SECRET_KEY, "HS256")  # control: same claims, right key
    assert _me(base, still_valid).status_code == 200

    for token in (tampered, alg_none, expired, foreign, "not.a.token", user.refresh):
        resp = _me(base, token)
        assert resp.status_code == 401, token
        assert resp.json()["code"] == "token_not_valid"
        assert "Bearer" in resp.headers.get("WWW-Authenticate", "")
    assert requests.get(f"{base}/api/auth/me/", timeout=30).status_code == 401


def test_refresh_rotates_and_reusing_a_rotated_token_revokes_its_family(
    base: str, api_client: Any
) -> None:
    user = api_client.user(base)
    other_session = login(base, user.user["username"], USER_PASSWORD)
    first = requests.post(
        f"{base}/api/auth/token/refresh/", json={"refresh": user.refresh}, timeout=30
    )
    assert first.status_code == 200
    rotated = first.json()
    assert set(rotated) == {"access", "refresh"} and rotated["refresh"] != user.refresh
    assert _me(base, rotated["access"]).status_code == 200
    second = requests.post(
        f"{base}/api/auth/token/refresh/", json={"refresh": rotated["refresh"]}, timeout=30
    )
    assert second.status_code == 200
    newest = second.json()
    assert _me(base, newest["access"]).status_code == 200

    # the first refresh token again: stolen or replayed; the whole family goes
    reused = requests.post(
        f"{base}/api/auth/token/refresh/", json={"refresh": user.refresh}, timeout=30
    )
    assert reused.status_code == 401 and reused.json()["code"] == "token_not_valid"
    again = requests.post(
        f"{base}/api/auth/token/refresh/", json={"refresh": newest["refresh"]}, timeout=30
    )
    assert again.status_code == 401 and again.json()["code"] == "token_not_valid"
    for access in (newest["access"], rotated["access"], user.token):
        refused = _me(base, access)
        assert refused.status_code == 401 and refused.json()["code"] == "token_revoked"
    # another login of the same user is another family: untouched
    assert _me(base, other_session.token).status_code == 200
    assert (
        requests.post(
            f"{base}/api/auth/token/refresh/", json={"refresh": other_session.refresh}, timeout=30
        ).status_code
        == 200
    )


def test_logout_blacklists_the_refresh_token(base: str, api_client: Any) -> None:
    user = api_client.user(base)
    other = api_client.user(base)
    assert user.post("/api/auth/logout/", json={"refresh": other.refresh}).status_code == 400
    assert Api(base).post("/api/auth/logout/", json={"refresh": user.refresh}).status_code == 401
    assert user.post("/api/auth/logout/", json={}).status_code == 400

    resp = user.post("/api/auth/logout/", json={"refresh": user.refresh})
    assert resp.status_code == 205
    after = requests.post(
        f"{base}/api/auth/token/refresh/", json={"refresh": user.refresh}, timeout=30
    )
    assert after.status_code == 401 and after.json()["code"] == "token_not_valid"
    twice = user.post("/api/auth/logout/", json={"refresh": user.refresh})
    assert twice.status_code == 401


def test_after_logout_the_access_token_is_refused(base: str, api_client: Any) -> None:
    user = api_client.user(base)
    other_session = login(base, user.user["username"], USER_PASSWORD)
    rotated = requests.post(
        f"{base}/api/auth/token/refresh/", json={"refresh": user.refresh}, timeout=30
    ).json()
    assert _me(base, user.token).status_code == 200  # an access token of the same session

    resp = Api(base, rotated["access"]).post(
        "/api/auth/logout/", json={"refresh": rotated["refresh"]}
    )
    assert resp.status_code == 205
    for access in (rotated["access"], user.token):
        refused = _me(base, access)
        assert refused.status_code == 401, refused.text
        assert refused.json()["code"] == "token_revoked"
        assert "Bearer" in refused.headers.get("WWW-Authenticate", "")
    assert user.get("/api/bookings/").status_code == 401
    # the user's other session keeps working
    assert _me(base, other_session.token).status_code == 200
