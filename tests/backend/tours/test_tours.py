"""Tours over HTTP on two replicas sharing Redis: the merged list (order, pages, filters, search),
its cache and invalidation on write, staff-only writes, capacity rules."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg2
import pytest

from backend.sharding.shardmap import ShardMap

pytestmark = [pytest.mark.postgres, pytest.mark.processes, pytest.mark.redis]

TAG = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def stack(
    module_replicas: Any, module_backend_env: dict[str, str], redis_server: Any, api_client: Any
) -> dict[str, Any]:
    extra = {
        "REDIS_URL": redis_server.url,
        "CACHE_KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}",
        "TOUR_LIST_CACHE_SECONDS": "300",
    }
    urls = module_replicas(2, extra_env=extra)
    staff = api_client.staff(urls[0], module_backend_env)
    tours = []
    for i in range(25):
        tours.append(
            api_client.make_tour(
                staff,
                name=f"{TAG} {'Sunny' if i % 3 == 0 else 'Misty'} trip {i:02d}",
                price=f"{100 + (i * 37) % 400}.00",
                start_date=f"2030-{1 + i % 12:02d}-{1 + i % 27:02d}",
                end_date=f"2030-{1 + i % 12:02d}-28",
                capacity=5 + i,
            )
        )
    return {"urls": urls, "staff": staff, "tours": tours, "env": module_backend_env}


def _all_pages(api: Any, query: str, page_size: int) -> tuple[list[dict[str, Any]], int]:
    results: list[dict[str, Any]] = []
    url: str | None = f"/api/tours/?search={TAG}&page_size={page_size}&{query}"
    count = -1
    while url:
        resp = api.get(url)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        count = body["count"]
        results.extend(body["results"])
        url = body["next"]
    return results, count


def test_tours_are_spread_over_both_shards(stack: dict[str, Any]) -> None:
    two = ShardMap(("shard_0", "shard_1"))
    assert {two.alias_for(t["id"]) for t in stack["tours"]} == {"shard_0", "shard_1"}


@pytest.mark.parametrize(
    ("ordering", "key", "reverse"),
    [
        ("price", lambda t: (Decimal(t["price"]), uuid.UUID(t["id"])), False),
        ("-price", lambda t: (Decimal(t["price"]), uuid.UUID(t["id"])), True),
        ("start_date", lambda t: (t["start_date"], uuid.UUID(t["id"])), False),
        ("-name", lambda t: (t["name"], uuid.UUID(t["id"])), True),
    ],
)
def test_merged_list_is_globally_ordered_and_paginated(
    stack: dict[str, Any], api_client: Any, ordering: str, key: Any, reverse: bool
) -> None:
    from tests.backend.conftest import Api

    api = Api(stack["urls"][1])
    got, count = _all_pages(api, f"ordering={ordering}", page_size=4)
    expected = sorted(stack["tours"], key=key, reverse=reverse)
    assert count == 25
    assert [t["id"] for t in got] == [t["id"] for t in expected]


def test_filters_by_price_date_and_name(stack: dict[str, Any]) -> None:
    from tests.backend.conftest import Api

    api = Api(stack["urls"][0])
    got, count = _all_pages(api, "price_min=200&price_max=350&ordering=price", page_size=100)
    want = [t for t in stack["tours"] if Decimal("200") <= Decimal(t["price"]) <= Decimal("350")]
    assert count == len(want) == len(got)
    assert {t["id"] for t in got} == {t["id"] for t in want}

    got, _ = _all_pages(api, "date_from=2030-03-01&date_to=2030-06-30", page_size=7)
    want = [t for t in stack["tours"] if "2030-03-01" <= t["start_date"] <= "2030-06-30"]
    assert sorted(t["id"] for t in got) == sorted(t["id"] for t in want)

    resp = api.get(f"/api/tours/?search={TAG}%20sunny&page_size=100")
    names = [t["name"] for t in resp.json()["results"]]
    assert names and all("Sunny" in n for n in names)
    assert len(names) == sum(1 for t in stack["tours"] if "Sunny" in t["name"])


def test_page_size_is_capped_and_bad_query_params_get_400(stack: dict[str, Any]) -> None:
    from tests.backend.conftest import Api

    api = Api(stack["urls"][0])
    resp = api.get("/api/tours/?page_size=1000")
    assert resp.status_code == 200 and len(resp.json()["results"]) <= 100
    for query in ("price_min=cheap", "date_from=yesterday", "ordering=password", "page=0"):
        resp = api.get(f"/api/tours/?{query}")
        assert resp.status_code == 400, (query, resp.text)
        assert resp.json()["code"] == "invalid"
    resp = api.get(f"/api/tours/?search={TAG}&page=99")
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"


def _set_name_behind_the_api(env: dict[str, str], tour_id: str, name: str) -> None:
    two = ShardMap(("shard_0", "shard_1"))
    url = env["SHARD_URLS"].split(",")[int(two.alias_for(tour_id).split("_")[1])]
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE tours_tour SET name = %s WHERE id = %s", (name, tour_id))
    finally:
        conn.close()


def test_list_is_cached_in_redis_and_invalidated_by_a_write_on_any_replica(
    stack: dict[str, Any],
) -> None:
    from tests.backend.conftest import Api

    a, b = Api(stack["urls"][0]), Api(stack["urls"][1])
    query = f"/api/tours/?search={TAG}&ordering=name&page_size=50"
    first = a.get(query)
    again = b.get(query)  # the other replica is served from the shared cache
    assert again.headers["X-List-Cache"] == "hit"
    assert again.json() == first.json()

    victim = stack["tours"][3]
    _set_name_behind_the_api(stack["env"], victim["id"], f"{TAG} Renamed behind the back")
    stale = b.get(query).json()
    assert victim["id"] in {t["id"] for t in stale["results"]}
    assert all(t["name"] != f"{TAG} Renamed behind the back" for t in stale["results"])

    staff_b = stack["staff"].with_base(stack["urls"][1])
    resp = staff_b.patch(f"/api/tours/{victim['id']}/", json={"name": f"{TAG} Renamed via API"})
    assert resp.status_code == 200, resp.text
    fresh = a.get(query)
    assert fresh.headers["X-List-Cache"] == "miss"
    assert f"{TAG} Renamed via API" in [t["name"] for t in fresh.json()["results"]]
    victim["name"] = f"{TAG} Renamed via API"


def test_writes_are_staff_only(stack: dict[str, Any], api_client: Any) -> None:
    from tests.backend.conftest import Api

    tour = stack["tours"][0]
    anonymous = Api(stack["urls"][0])
    user = api_client.user(stack["urls"][0])
    body = {
        "name": "x",
        "price": "1.00",
        "start_date": "2030-01-01",
        "end_date": "2030-01-02",
        "capacity": 1,
    }
    assert anonymous.post("/api/tours/", json=body).status_code == 401
    resp = user.post("/api/tours/", json=body)
    assert resp.status_code == 403 and resp.json()["code"] == "permission_denied"
    assert user.delete(f"/api/tours/{tour['id']}/").status_code == 403
    assert user.patch(f"/api/tours/{tour['id']}/", json={"price": "1.00"}).status_code == 403
    assert anonymous.get(f"/api/tours/{tour['id']}/").json()["price"] == tour["price"]


def test_staff_crud_and_validation(stack: dict[str, Any], api_client: Any) -> None:
    staff = stack["staff"]
    bad = staff.post(
        "/api/tours/",
        json={
            "name": "",
            "price": "-5",
            "start_date": "2030-05-02",
            "end_date": "2030-05-01",
            "capacity": 0,
        },
    )
    assert bad.status_code == 400
    assert {"name", "price", "capacity"} <= set(bad.json()["errors"])
    dates = staff.post(
        "/api/tours/",
        json={
            "name": "d",
            "price": "5",
            "start_date": "2030-05-02",
            "end_date": "2030-05-01",
            "capacity": 3,
        },
    )
    assert dates.status_code == 400 and "end_date" in dates.json()["errors"]

    tour = api_client.make_tour(staff, name=f"{TAG}-crud", capacity=10)
    assert tour["seats_available"] == 10 and tour["photo_urls"] == []
    uuid.UUID(tour["id"])
    resp = staff.patch(f"/api/tours/{tour['id']}/", json={"capacity": 4})
    assert resp.status_code == 200 and resp.json()["seats_available"] == 4
    resp = staff.patch(f"/api/tours/{tour['id']}/", json={"end_date": "2000-01-01"})
    assert resp.status_code == 400 and "end_date" in resp.json()["errors"]
    full = dict(tour, name=f"{TAG}-crud-put", capacity=6)
    resp = staff.put(f"/api/tours/{tour['id']}/", json=full)
    assert resp.status_code == 200 and resp.json()["name"] == f"{TAG}-crud-put"
    assert staff.delete(f"/api/tours/{tour['id']}/").status_code == 204
    gone = staff.get(f"/api/tours/{tour['id']}/")
    assert gone.status_code == 404 and gone.json() == {
        "detail": "No tour with this id.",
        "code": "not_found",
    }
    assert staff.delete(f"/api/tours/{uuid.uuid4()}/").status_code == 404


def test_capacity_cannot_drop_below_booked_seats(stack: dict[str, Any], api_client: Any) -> None:
    staff = stack["staff"]
    tour = api_client.make_tour(staff, name=f"{TAG}-booked", capacity=10)
    two = ShardMap(("shard_0", "shard_1"))
    url = stack["env"]["SHARD_URLS"].split(",")[int(two.alias_for(tour["id"]).split("_")[1])]
    conn = psycopg2.connect(url)
    try:  # 6 seats taken (as a booking would take them)
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE tours_tour SET seats_available = 4 WHERE id = %s", (tour["id"],))
    finally:
        conn.close()
    resp = staff.patch(f"/api/tours/{tour['id']}/", json={"capacity": 5})
    assert resp.status_code == 409 and resp.json()["code"] == "capacity_below_booked"
    resp = staff.patch(f"/api/tours/{tour['id']}/", json={"capacity": 8})
    assert resp.status_code == 200 and resp.json()["seats_available"] == 2
    resp = staff.delete(f"/api/tours/{tour['id']}/")
    assert resp.status_code == 409 and resp.json()["code"] == "tour_has_bookings"
