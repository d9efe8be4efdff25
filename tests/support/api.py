"""API helpers for backend tests: a requests session with a bearer token, users and staff.

`Api` wraps requests with a bearer token; `api_client` gives `ApiHelpers`: `.user(base)`
registers a fresh user and logs in, `.staff(base, env)` creates a staff user through
`python -m backend create_staff` and logs in, `.make_tour(staff, **fields)` creates a tour
through the API.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.support.databases import manage

STAFF_PASSWORD = "Staff-pass-9f2c!"
USER_PASSWORD = "User-pass-7d1e!"


class Api:
    """A requests session against one replica, optionally with a bearer token."""

    def __init__(self, base: str, token: str | None = None, refresh: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        self.token = token
        self.refresh = refresh
        self.user: dict[str, Any] = {}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        kwargs.setdefault("timeout", 30)
        url = path if path.startswith("http") else f"{self.base}{path}"
        return self.session.request(method, url, headers=headers, **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def with_base(self, base: str) -> Api:
        """The same credentials against another replica."""
        other = Api(base, self.token, self.refresh)
        other.user = self.user
        return other


def login(base: str, username: str, password: str) -> Api:
    resp = requests.post(
        f"{base}/api/auth/token/", json={"username": username, "password": password}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return Api(base, body["access"], body["refresh"])


class ApiHelpers:
    def user(self, base: str, username: str | None = None) -> Api:
        """Register a fresh user and log in."""
        username = username or f"u{uuid.uuid4().hex[:12]}"
        resp = requests.post(
            f"{base}/api/auth/register/",
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": USER_PASSWORD,
            },
            timeout=30,
        )
        assert resp.status_code == 201, resp.text
        api = login(base, username, USER_PASSWORD)
        api.user = resp.json()
        return api

    def staff(self, base: str, env: dict[str, str], username: str = "staff") -> Api:
        """Create (or reset) a staff user with `python -m backend create_staff`, and log in."""
        manage(env, "create_staff", "--username", username, "--password", STAFF_PASSWORD)
        api = login(base, username, STAFF_PASSWORD)
        api.user = api.get("/api/auth/me/").json()
        return api

    def make_tour(self, staff: Api, **fields: Any) -> dict[str, Any]:
        """Create a tour through the API as staff; returns the tour as the API shows it."""
        body = {
            "name": f"Tour {uuid.uuid4().hex[:8]}",
            "description": "A test tour.",
            "price": "100.00",
            "start_date": "2030-06-01",
            "end_date": "2030-06-05",
            "capacity": 10,
            **fields,
        }
        resp = staff.post("/api/tours/", json=body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


@pytest.fixture(scope="session")
def api_client() -> ApiHelpers:
    return ApiHelpers()
