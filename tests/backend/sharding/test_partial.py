"""One of two shards stopped (a real PostgreSQL server): the fan-out reads answer 200 with the
live shard's rows and say what they lack, the live shard books and pays, the dead shard's
writes get 503 shard_unavailable + Retry-After, and the lists are whole again within 15 s of
the restart. Also: a whole page cached before the outage is served stale instead."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest

from backend.sharding.shardmap import ShardMap
from tests.backend.conftest import Api

pytestmark = [pytest.mark.postgres, pytest.mark.processes, pytest.mark.slow]

CARD = {"card_number": "4242424242424242"}
TWO = ShardMap(("shard_0", "shard_1"))
RECOVERY_SECONDS = 15


def tours_on_each_shard(api_client: Any, staff: Api, tag: str, per_shard: int) -> dict[str, list]:
    """Tours named `tag ...` until each shard holds at least `per_shard` (all are returned)."""
    made: dict[str, list[dict[str, Any]]] = {"shard_0": [], "shard_1": []}
    while min(len(v) for v in made.values()) < per_shard:
        tour = api_client.make_tour(staff, name=f"{tag} {uuid.uuid4().hex[:6]}", capacity=5)
        made[TWO.alias_for(tour["id"])].append(tour)
    return made


def assert_partial(resp: Any, live_ids: set[str], dead_ids: set[str]) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["partial"] is True and body["unavailable_shards"] == ["shard_1"]
    assert resp.headers["X-Partial-Shards"] == "shard_1"
    assert resp.headers["Cache-Control"] == "no-store"
    ids = {row["id"] for row in body["results"]}
    assert live_ids <= ids and not (dead_ids & ids)
    # count and pagination describe what is returned
    assert body["count"] == len(body["results"]) and body["next"] is None
    return body


def test_one_shard_down_lists_answer_partially_and_the_live_shard_books(
    backend_env: dict[str, str], pg_databases: dict[str, Any], replicas: Any, api_client: Any
) -> None:
    (base,) = replicas(1, env=backend_env, extra_env={"TOUR_LIST_CACHE_SECONDS": "1"})
    staff = api_client.staff(base, backend_env)
    tag = f"Partial{uuid.uuid4().hex[:6]}"
    made = tours_on_each_shard(api_client, staff, tag, per_shard=2)
    live = {t["id"] for t in made["shard_0"]}
    dead = {t["id"] for t in made["shard_1"]}
    total = len(live) + len(dead)
    user = api_client.user(base)
    # a booking on each shard before the outage, the shard_1 one left pending
    before = {
        alias: user.post("/api/bookings/", json={"tour": tours[0]["id"], "seats": 1}).json()
        for alias, tours in made.items()
    }
    assert all("id" in b for b in before.values()), before
    anonymous = Api(base)
    # a whole page, cached (1 s fresh) with its stale-if-error copy (30 s)
    whole = anonymous.get(f"/api/tours/?search={tag}&ordering=price&page_size=50")
    assert whole.json()["count"] == total and "partial" not in whole.json()

    server = pg_databases["servers"][2]
    server.stop("fast")
    try:
        search = anonymous.get(f"/api/tours/?search={tag}&page_size=50")
        assert assert_partial(search, live, dead)["count"] == len(live)
        listing = anonymous.get("/api/tours/?page_size=100")
        assert_partial(listing, live, dead)

        mine = user.get("/api/bookings/?page_size=50")
        assert mine.status_code == 200, mine.text
        body = mine.json()
        assert body["partial"] is True and body["unavailable_shards"] == ["shard_1"]
        assert mine.headers["X-Partial-Shards"] == "shard_1"
        assert [b["id"] for b in body["results"]] == [before["shard_0"]["id"]]
        assert body["count"] == 1

        # the live shard books and pays
        booked = user.post("/api/bookings/", json={"tour": made["shard_0"][1]["id"], "seats": 2})
        assert booked.status_code == 201, booked.text
        paid = user.post(f"/api/bookings/{booked.json()['id']}/pay/", json=CARD)
        assert paid.status_code == 200 and paid.json()["status"] == "confirmed", paid.text

        # the dead shard's single resources: 503 shard_unavailable + Retry-After, every path
        writes = [
            user.post("/api/bookings/", json={"tour": made["shard_1"][1]["id"], "seats": 1}),
            user.post(
                "/api/bookings/",
                json={"tour": made["shard_1"][1]["id"], "seats": 1},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ),
            user.post(f"/api/bookings/{before['shard_1']['id']}/pay/", json=CARD),
            user.post(f"/api/bookings/{before['shard_1']['id']}/cancel/"),
            user.get(f"/api/bookings/{before['shard_1']['id']}/"),
            anonymous.get(f"/api/tours/{made['shard_1'][0]['id']}/"),
            anonymous.get(f"/api/tours/{made['shard_1'][0]['id']}/reviews/"),
            staff.patch(f"/api/tours/{made['shard_1'][0]['id']}/", json={"name": "x"}),
        ]
        for resp in writes:
            assert resp.status_code == 503, (resp.request.method, resp.request.url, resp.text)
            assert resp.json()["code"] == "shard_unavailable", resp.text
            assert int(resp.headers["Retry-After"]) >= 1
        # an idempotent booking on the live shard while the other is down
        key = uuid.uuid4().hex
        other = api_client.user(base)
        first = other.post(
            "/api/bookings/",
            json={"tour": made["shard_0"][0]["id"], "seats": 1},
            headers={"Idempotency-Key": key},
        )
        again = other.post(
            "/api/bookings/",
            json={"tour": made["shard_0"][0]["id"], "seats": 1},
            headers={"Idempotency-Key": key},
        )
        assert first.status_code == 201 and again.status_code == 201, (first.text, again.text)
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"

        # stale-if-error: the page read whole before the outage, past its 1 s freshness
        time.sleep(1.2)
        stale = anonymous.get(f"/api/tours/?search={tag}&ordering=price&page_size=50")
        assert stale.status_code == 200 and stale.headers["X-List-Cache"] == "stale"
        assert stale.json()["count"] == total and "partial" not in stale.json()
        assert "X-Partial-Shards" not in stale.headers

        ready = anonymous.get("/readyz")
        assert ready.status_code == 503 and ready.json()["failed"] == ["shard_1"]
        assert ready.json()["circuits"]["shard_1"]["open"] is True
        metrics = anonymous.get("/metrics").text
        assert 'backend_shard_up{shard="shard_1"} 0.0' in metrics
        assert 'backend_shard_up{shard="shard_0"} 1.0' in metrics
    finally:
        server.start()

    restarted = time.monotonic()
    while True:
        resp = anonymous.get(f"/api/tours/?search={tag}&page_size=50")
        assert resp.status_code == 200, resp.text
        if not resp.json().get("partial"):
            break
        assert time.monotonic() - restarted < RECOVERY_SECONDS, "the list stayed partial"
        time.sleep(0.25)
    assert resp.json()["count"] == total and "X-Partial-Shards" not in resp.headers
    mine = user.get("/api/bookings/?page_size=50").json()
    assert "partial" not in mine and mine["count"] == 3
    booked = user.post("/api/bookings/", json={"tour": made["shard_1"][1]["id"], "seats": 1})
    assert booked.status_code == 201, booked.text
    assert 'backend_shard_up{shard="shard_1"} 1.0' in anonymous.get("/metrics").text


def test_a_shard_that_does_not_answer_costs_one_connect_timeout_not_one_per_request(
    backend_env: dict[str, str], replicas: Any
) -> None:
    # a host that accepts TCP but never speaks: every connect would wait DB_CONNECT_TIMEOUT
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        port = hung.getsockname()[1]
        shard_0 = backend_env["SHARD_URLS"].split(",")[0]
        env = {**backend_env, "SHARD_URLS": f"{shard_0},postgresql://postgres@127.0.0.1:{port}/x"}
        (base,) = replicas(
            1,
            env=env,
            extra_env={"DB_CONNECT_TIMEOUT": "2", "SHARD_CIRCUIT_SECONDS": "60"},
        )
        anonymous = Api(base)

        def timed(path: str) -> tuple[float, Any]:
            start = time.monotonic()
            resp = anonymous.get(path)
            return time.monotonic() - start, resp

        first, resp = timed("/api/tours/?search=first")
        assert resp.status_code == 200 and resp.json()["unavailable_shards"] == ["shard_1"]
        assert first >= 1.5  # the one connect timeout that opened the circuit
        later = [timed(f"/api/tours/?search=n{i}") for i in range(5)]
        assert all(r.status_code == 200 and r.json()["partial"] for _, r in later)
        assert max(t for t, _ in later) < 1.0, [round(t, 2) for t, _ in later]
        fast, down = timed(f"/api/tours/{uuid.UUID(int=1)}/")  # int 1 -> logical 1 -> shard_1
        assert down.status_code == 503 and down.json()["code"] == "shard_unavailable"
        assert fast < 1.0 and "failed fast" in anonymous.get("/readyz").json()["checks"]["shard_1"]
