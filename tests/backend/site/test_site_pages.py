"""The web site on a production-like replica (DJANGO_DEBUG=0): pages for browsers, JSON for API
clients, CSRF on forms, cookie flags (Secure only behind TLS), escaped tour names."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.backend.conftest import USER_PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.processes]

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture(scope="module")
def base(module_replicas: Any) -> str:
    return str(module_replicas(1)[0])


def csrf_of(page: requests.Response) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_unknown_address_is_a_page_for_browsers_and_json_for_api_clients(base: str) -> None:
    page = requests.get(f"{base}/no-such-page/", headers=BROWSER, timeout=10)
    assert page.status_code == 404 and page.headers["Content-Type"].startswith("text/html")
    assert "Page not found" in page.text
    api = requests.get(f"{base}/no-such-page/", timeout=10)
    assert api.status_code == 404 and api.json()["code"] == "not_found"


def test_home_lists_tours_with_names_escaped(
    base: str, module_backend_env: Any, api_client: Any
) -> None:
    staff = api_client.staff(base, module_backend_env)
    tour = api_client.make_tour(staff, name='Black Friday <script>alert("x")</script>')
    page = requests.get(f"{base}/?search=Black+Friday", headers=BROWSER, timeout=10)
    assert page.status_code == 200
    assert '<script>alert("x")</script>' not in page.text
    assert "Black Friday &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page.text
    detail = requests.get(f"{base}/tours/{tour['id']}/", headers=BROWSER, timeout=10)
    assert detail.status_code == 200 and "&lt;script&gt;" in detail.text
    seats = requests.get(f"{base}/tours/{tour['id']}/seats/", timeout=10)
    assert f'data-seats="{tour["seats_available"]}"' in seats.text
    assert "no-cache" in seats.headers["Cache-Control"]


def test_forms_need_their_csrf_token(base: str, module_backend_env: Any, api_client: Any) -> None:
    staff = api_client.staff(base, module_backend_env)
    tour = api_client.make_tour(staff)
    user = api_client.user(base)
    browser = requests.Session()
    form = browser.get(f"{base}/login/", headers=BROWSER, timeout=10)
    wrong = browser.post(
        f"{base}/login/",
        headers=BROWSER,
        data={
            "username": user.user["username"],
            "password": "x",
            "csrfmiddlewaretoken": csrf_of(form),
        },
        timeout=10,
    )
    assert wrong.status_code == 200 and "Log in" in wrong.text  # the form again
    signed_in = browser.post(
        f"{base}/login/",
        headers=BROWSER,
        data={
            "username": user.user["username"],
            "password": USER_PASSWORD,
            "csrfmiddlewaretoken": csrf_of(wrong),
        },
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.status_code == 302, signed_in.text[:300]
    session_cookie = signed_in.headers["Set-Cookie"]
    assert "sessionid=" in session_cookie and "HttpOnly" in session_cookie
    assert "SameSite=Lax" in session_cookie
    for accept, kind in ((BROWSER, "text/html"), ({"Accept": "application/json"}, "json")):
        refused = browser.post(
            f"{base}/tours/{tour['id']}/book/", headers=accept, data={"seats": "1"}, timeout=10
        )
        assert refused.status_code == 403
        assert kind in refused.headers["Content-Type"]


def test_cookies_are_httponly_lax_and_secure_only_behind_tls(base: str) -> None:
    plain = requests.get(f"{base}/login/", headers=BROWSER, timeout=10)
    cookie = plain.headers["Set-Cookie"]
    assert "csrftoken=" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    tls = requests.get(
        f"{base}/login/", headers={**BROWSER, "X-Forwarded-Proto": "https"}, timeout=10
    )
    assert "csrftoken=" in tls.headers["Set-Cookie"] and "Secure" in tls.headers["Set-Cookie"]


def test_bad_filters_and_too_deep_pages_are_pages_not_crashes(base: str) -> None:
    bad = requests.get(f"{base}/?price_min=cheap&date_from=soon", headers=BROWSER, timeout=10)
    assert bad.status_code == 200 and "Please check the filters" in bad.text
    deep = requests.get(f"{base}/?page=9999", headers=BROWSER, timeout=10)
    assert deep.status_code == 400 and deep.headers["Content-Type"].startswith("text/html")
    assert "narrow the filters" in deep.text
    missing = requests.get(
        f"{base}/tours/{'0' * 8}-0000-4000-8000-{'0' * 12}/", headers=BROWSER, timeout=10
    )
    assert missing.status_code == 404 and "Tour not found" in missing.text


def test_register_form_says_what_is_wrong(base: str, api_client: Any) -> None:
    taken = api_client.user(base).user["username"]
    browser = requests.Session()
    form = browser.get(f"{base}/register/", headers=BROWSER, timeout=10)
    again = browser.post(
        f"{base}/register/",
        headers=BROWSER,
        data={
            "username": taken,
            "email": "x@example.com",
            "password": "123",
            "csrfmiddlewaretoken": csrf_of(form),
        },
        timeout=10,
    )
    assert again.status_code == 200
    assert "A user with that username already exists." in again.text
    assert f'value="{taken}"' in again.text  # what was typed is kept (but not the password)
    assert 'value="123"' not in again.text
