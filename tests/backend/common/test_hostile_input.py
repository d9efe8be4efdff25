"""Hostile input on every endpoint: deep nesting, Unicode digits, huge numbers, wrong types, null
bytes, bad encodings. Every answer is a JSON 4xx naming what is wrong, never a 5xx; and through
the real lb, a flood of such requests leaves every backend eligible and every breaker closed."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests

from tests.backend.conftest import Api
from tests.lb.conftest import start_lb

pytestmark = [pytest.mark.postgres, pytest.mark.processes]

ALLOWED = {400, 401, 404, 405, 409, 413, 415}

NESTED_ARRAY = "[" * 2000 + "]" * 2000
NESTED_OBJECT = '{"a":' * 2000 + "1" + "}" * 2000
ARABIC = str.maketrans("0123456789", "".join(chr(0x660 + d) for d in range(10)))  # Arabic-Indic


def arabic(text: str) -> str:
    return text.translate(ARABIC)


# every field name the API reads numbers, dates or ids from, in Unicode digits
UNICODE_DIGITS = {
    "seats": arabic("2"),
    "rating": arabic("4"),
    "capacity": arabic("10"),
    "price": arabic("100.00"),
    "start_date": arabic("2031-06-01"),
    "end_date": arabic("2031-06-05"),
    "exp_month": arabic("12"),
    "exp_year": arabic("2031"),
    "cvc": arabic("123"),
    "card_number": arabic("4242424242424242"),
}
NUMERIC_FIELDS = set(UNICODE_DIGITS)

HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("nested array", NESTED_ARRAY.encode()),
    ("nested object", NESTED_OBJECT.encode()),
    ("nested in a field", json.dumps({"seats": 1}).replace("1", NESTED_ARRAY).encode()),
    ("huge integer", b'{"seats": ' + b"9" * 5000 + b', "rating": 1' + b"0" * 4000 + b"}"),
    ("huge exponent", b'{"seats": 1e400, "price": 1e999999, "capacity": -1e400}'),
    ("NaN", b'{"seats": NaN, "price": Infinity}'),
    ("a list", b"[1, 2, 3]"),
    ("a string", b'"hello"'),
    ("null", b"null"),
    (
        "wrong types",
        b'{"seats": {"a": 1}, "tour": [1], "rating": true, "card_number": 42, "capacity": [1],'
        b' "price": {"a": 1}, "name": ["x"], "start_date": 5, "refresh": 7, "username": [],'
        b' "password": {}}',
    ),
    (
        "null bytes",
        json.dumps({"username": "a\x00b", "password": "\x00", "name": "x\x00"}).encode(),
    ),
    ("invalid UTF-8", b'{"username": "\xff\xfe", "password": "x"}'),
    ("truncated", b'{"seats": '),
]


def assert_json_4xx(resp: requests.Response, label: str) -> dict[str, Any]:
    assert resp.status_code in ALLOWED, f"{label}: {resp.status_code} {resp.text[:300]}"
    assert "application/json" in resp.headers.get("Content-Type", ""), label
    body = resp.json()
    assert body["detail"] and body["code"], label
    return dict(body)


@pytest.fixture(scope="module")
def live(module_replicas: Any, module_backend_env: dict[str, str], api_client: Any) -> Any:
    (base,) = module_replicas(1)
    staff = api_client.staff(base, module_backend_env, username="hostile-staff")
    tour = api_client.make_tour(staff, capacity=50)
    booking = staff.post("/api/bookings/", json={"tour": tour["id"], "seats": 1})
    assert booking.status_code == 201, booking.text
    schema = requests.get(f"{base}/api/schema/?format=json", timeout=30).json()
    return {
        "base": base,
        "staff": staff,
        "tour": tour,
        "booking": booking.json(),
        "schema": schema,
    }


def operations(live: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, concrete path, operation) of every operation in the served schema."""
    ids = {"tour_id": live["tour"]["id"], "booking_id": live["booking"]["id"]}
    found = []
    for template, item in live["schema"]["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, op))
    assert len(found) >= 15, found
    return found


def body_operations(live: Any) -> list[tuple[str, str]]:
    """The operations that read a request body (cancel and DELETE read none)."""
    found = [(m, p) for m, p, op in operations(live) if op.get("requestBody")]
    assert len(found) >= 9, found
    return found


def test_every_body_endpoint_answers_hostile_json_with_a_json_4xx(live: Any) -> None:
    staff: Api = live["staff"]
    anonymous = Api(live["base"])
    checked = 0
    for method, path in body_operations(live):
        for label, body in HOSTILE_BODIES:
            for who in (staff, anonymous):
                resp = who.request(
                    method, path, data=body, headers={"Content-Type": "application/json"}
                )
                assert_json_4xx(resp, f"{method} {path} [{label}]")
                checked += 1
    assert checked > 200


def test_nested_json_is_a_400_parse_error_on_every_json_endpoint(live: Any) -> None:
    """The staff token passes every permission check, so each body reaches the parser."""
    for method, path in body_operations(live):
        if path.endswith("/photos/"):
            continue  # multipart only: JSON is a 415 there
        for body in (NESTED_ARRAY, NESTED_OBJECT):
            resp = live["staff"].request(
                method, path, data=body, headers={"Content-Type": "application/json"}
            )
            assert resp.status_code == 400, f"{method} {path}: {resp.status_code} {resp.text}"
            assert resp.json()["code"] == "parse_error"
            assert "nested deeper than" in resp.json()["detail"]
    token = requests.post(
        f"{live['base']}/api/auth/token/",
        data=NESTED_ARRAY,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert token.status_code == 400 and token.json()["code"] == "parse_error"


def test_unicode_digits_are_a_400_naming_the_field(live: Any) -> None:
    for method, path in body_operations(live):
        if path.endswith(("/photos/", "/logout/", "/token/", "/refresh/", "/register/")):
            continue  # no number, date or id is read from these bodies
        resp = live["staff"].request(method, path, json=UNICODE_DIGITS)
        body = assert_json_4xx(resp, f"{method} {path}")
        assert resp.status_code == 400, f"{method} {path}: {resp.text}"
        named = set(body.get("errors", {})) & NUMERIC_FIELDS
        assert named, f"{method} {path}: {body}"
    # ids: a booking id in Unicode digits is no booking (the URL pattern is ASCII hex)
    fake = arabic("00000000-0000-4000-8000-000000000000")
    for path in (f"/api/bookings/{fake}/", f"/api/tours/{fake}/"):
        assert live["staff"].get(path).status_code == 404
    booking = live["staff"].post("/api/bookings/", json={"tour": fake, "seats": 1})
    assert booking.status_code == 400 and "tour" in booking.json()["errors"]


def test_unicode_digits_in_query_parameters_are_a_400_naming_the_parameter(live: Any) -> None:
    queries = {
        "/api/tours/": ["page", "page_size", "price_min", "price_max", "date_from", "date_to"],
        "/api/bookings/": ["page", "page_size"],
        f"/api/tours/{live['tour']['id']}/reviews/": ["page", "page_size"],
    }
    values = {"date_from": arabic("2030-01-01"), "date_to": arabic("2030-01-01")}
    for path, names in queries.items():
        for name in names:
            resp = live["staff"].get(path, params={name: values.get(name, arabic("2"))})
            body = assert_json_4xx(resp, f"{path}?{name}")
            assert resp.status_code == 400 and name in body["errors"], (path, name, body)
        huge = live["staff"].get(path, params={"page": "9" * 5000})
        assert huge.status_code in (400, 404) and "page" in huge.text
        for name in names + (["search", "ordering"] if path == "/api/tours/" else []):
            nul = live["staff"].get(path, params={name: "a\x00b"})
            assert_json_4xx(nul, f"{path}?{name}=NUL")


def test_a_card_number_in_unicode_digits_is_a_400_and_nothing_is_charged(
    live: Any, api_client: Any
) -> None:
    staff: Api = live["staff"]
    tour = api_client.make_tour(staff, capacity=5)
    booking = staff.post("/api/bookings/", json={"tour": tour["id"], "seats": 1}).json()
    for number in (
        "42424242424242\u00b24",
        arabic("4242424242424242"),
        "4242 4242 4242 424" + arabic("2"),
    ):
        resp = staff.post(f"/api/bookings/{booking['id']}/pay/", json={"card_number": number})
        body = assert_json_4xx(resp, number)
        assert resp.status_code == 400 and "card_number" in body["errors"], body
    for cvc in (arabic("123"), "12\u00b3"):
        resp = staff.post(
            f"/api/bookings/{booking['id']}/pay/",
            json={"card_number": "4242424242424242", "cvc": cvc},
        )
        assert resp.status_code == 400 and "cvc" in resp.json()["errors"]
    assert staff.get(f"/api/bookings/{booking['id']}/").json()["status"] == "pending"
    paid = staff.post(
        f"/api/bookings/{booking['id']}/pay/", json={"card_number": "4242424242424242"}
    )
    assert paid.status_code == 200 and paid.json()["status"] == "confirmed"


def test_non_json_media_types_and_oversized_bodies(live: Any) -> None:
    staff: Api = live["staff"]
    plain = staff.post("/api/bookings/", data=b"seats=1", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415 and plain.json()["code"] == "unsupported_media_type"
    big = staff.post(
        "/api/bookings/",
        data=b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["code"] == "body_too_large"


@pytest.mark.slow
def test_a_flood_of_hostile_bodies_through_the_lb_ejects_no_backend(
    module_replicas: Any, live: Any, tmp_path: Any
) -> None:
    """200 nested-JSON and Unicode-digit requests from one address: all 400, and the lb keeps
    every backend healthy, not ejected, with its breaker closed."""
    bases = [live["base"], *module_replicas(1)]
    lb = start_lb(
        {
            "LB_BACKENDS": ",".join(bases),
            "BUCKET_CAPACITY": "1000",
            "LEAK_RATE": "1000",
            "LB_RATE_RULES": "",
        },
        tmp_path / "lb.log",
    )
    try:
        session = requests.Session()
        statuses = []
        for i in range(200):
            if i % 2:
                resp = session.post(
                    f"{lb.url}/api/auth/token/",
                    data=NESTED_ARRAY,
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
            else:
                resp = session.post(
                    f"{lb.url}/api/bookings/{live['booking']['id']}/pay/",
                    json={"card_number": "42424242424242\u00b24"},
                    headers={"Authorization": f"Bearer {live['staff'].token}"},
                    timeout=30,
                )
            statuses.append(resp.status_code)
        assert set(statuses) == {400}, sorted(set(statuses))
        backends = lb.status()["backends"]
        assert len(backends) == 2
        for backend in backends:
            assert backend["healthy"] and backend["eligible"], backend
            assert backend["breaker"] == "closed" and backend.get("ejected_until") is None, backend
            assert backend.get("ejections", 0) == 0, backend
    finally:
        lb.process.stop()
