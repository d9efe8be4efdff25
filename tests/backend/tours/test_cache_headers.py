"""The backend's cache policy (Cache-Control, tags, purge orders) and, end to end through a
real lb with two workers, Redis and two replicas: a booking's seat count is fresh at once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.sharding.shardmap import ShardMap
from lb.cache.purge import CHANNEL
from ops.servers import RedisServer
from tests.backend.conftest import ApiHelpers, ReplicaStarter
from tests.lb.conftest import start_lb

PUBLIC = "public, max-age=1, stale-while-revalidate=5, stale-if-error=300"


def caching_lb(base: str, tmp_path: Path) -> Any:
    """An lb with its micro-cache on in front of the replica at `base`, admission wide open."""
    env = {
        "LB_BACKENDS": base,
        "LB_CACHE_BYTES": "8000000",
        "BUCKET_CAPACITY": "100000",
        "LEAK_RATE": "100000",
        "LB_RATE_RULES": "",
    }
    return start_lb(env, tmp_path / "lb.log")


def test_public_tour_reads_are_cacheable_and_personal_answers_are_not(
    replicas: ReplicaStarter, backend_env: dict[str, str], api_client: ApiHelpers
) -> None:
    (base,) = replicas(1)
    staff = api_client.staff(base, backend_env)
    tour = api_client.make_tour(staff, capacity=5)
    user = api_client.user(base)

    listed = requests.get(f"{base}/api/tours/", timeout=10)
    assert listed.headers["Cache-Control"] == PUBLIC
    assert listed.headers["Surrogate-Key"] == "tours"
    searched = requests.get(f"{base}/api/tours/?search=Tour", timeout=10)
    assert searched.headers["Cache-Control"] == PUBLIC
    detail = requests.get(f"{base}/api/tours/{tour['id']}/", timeout=10)
    assert detail.headers["Cache-Control"] == PUBLIC
    assert detail.headers["Surrogate-Key"] == f"tours tour:{tour['id']}"
    missing = requests.get(f"{base}/api/tours/{uuid.uuid4()}/", timeout=10)
    assert missing.status_code == 404 and missing.headers["Cache-Control"] == PUBLIC

    # anything authenticated, and every booking answer, is private
    assert user.get(f"/api/tours/{tour['id']}/").headers["Cache-Control"] == "private, no-store"
    assert user.get("/api/bookings/").headers["Cache-Control"] == "private, no-store"
    anonymous = requests.get(f"{base}/api/bookings/", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["Cache-Control"] == "private, no-store"

    # a booking names the pages it made stale; so do a cancel and a staff edit
    booked = user.post("/api/bookings/", json={"tour": tour["id"], "seats": 2})
    assert booked.status_code == 201, booked.text
    assert booked.headers["X-Cache-Purge"] == f"tour:{tour['id']}"
    assert booked.headers["Cache-Control"] == "private, no-store"
    cancelled = user.post(f"/api/bookings/{booked.json()['id']}/cancel/")
    assert cancelled.headers["X-Cache-Purge"] == f"tour:{tour['id']}"
    edited = staff.patch(f"/api/tours/{tour['id']}/", json={"name": "Renamed"})
    assert edited.status_code == 200
    assert "tours" in edited.headers["X-Cache-Purge"].split()


def test_the_policy_values_come_from_the_environment(
    replicas: ReplicaStarter, api_client: ApiHelpers
) -> None:
    (base,) = replicas(
        1,
        extra_env={
            "EDGE_CACHE_MAX_AGE": "7",
            "EDGE_CACHE_STALE_WHILE_REVALIDATE": "0",
            "EDGE_CACHE_STALE_IF_ERROR": "9",
        },
    )
    listed = requests.get(f"{base}/api/tours/", timeout=10)
    assert listed.headers["Cache-Control"] == (
        "public, max-age=7, stale-while-revalidate=0, stale-if-error=9"
    )


def _seats_through(lb_url: str, tour_id: str) -> tuple[int, str]:
    # a new connection each time: SO_REUSEPORT spreads them over the lb's workers
    resp = requests.get(
        f"{lb_url}/api/tours/{tour_id}/", headers={"Connection": "close"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["seats_available"]), resp.headers.get("X-Cache", "")


@pytest.mark.redis
@pytest.mark.processes
def test_a_bookings_seat_count_is_visible_through_every_lb_worker_within_a_second(
    replicas: ReplicaStarter,
    backend_env: dict[str, str],
    api_client: ApiHelpers,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # a long max-age: only the purge (not expiry) can make the new count visible this fast
    env = {"REDIS_URL": redis_server.url, "EDGE_CACHE_MAX_AGE": "60"}
    bases = replicas(2, extra_env=env)
    staff = api_client.staff(bases[0], {**backend_env, **env})
    tour = api_client.make_tour(staff, capacity=40)
    user = api_client.user(bases[0])
    lb = start_lb(
        {
            "LB_BACKENDS": ",".join(bases),
            "LB_WORKERS": "2",
            "LB_CACHE_BYTES": "8000000",
            "REDIS_URL": redis_server.url,
            "BUCKET_CAPACITY": "100000",
            "LEAK_RATE": "100000",
            "LB_RATE_RULES": "",
        },
        tmp_path / "lb.log",
    )
    try:
        _wait_subscribed(lb.status, workers=2)
        labels = [_seats_through(lb.url, tour["id"]) for _ in range(30)]
        assert {seats for seats, _ in labels} == {40}
        assert [label for _, label in labels].count("MISS") <= 2  # one per worker at most
        booked = user.with_base(lb.url).post(
            "/api/bookings/", json={"tour": tour["id"], "seats": 3}
        )
        assert booked.status_code == 201, booked.text
        created = time.monotonic()
        seen: list[tuple[float, int, str]] = []
        while time.monotonic() - created < 1.0:
            seats, label = _seats_through(lb.url, tour["id"])
            seen.append((time.monotonic() - created, seats, label))
        assert seen and all(seats == 37 for _, seats, _ in seen), seen
        assert {"HIT", "COALESCED"} & {label for _, _, label in seen}  # cached again meanwhile
        cache = lb.status()["cache"]
        assert cache["purges"]["redis"] >= 2  # each worker applied the published order
    finally:
        lb.process.stop(timeout=15)


def _wait_subscribed(status: Any, workers: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cache = status()["cache"]
            if cache and cache["workers"] == workers and cache["subscribers"] == ["subscribed"]:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the lb workers did not subscribe to {CHANNEL}")


@pytest.mark.slow
@pytest.mark.processes
def test_a_tour_page_outlives_its_shard_going_down_within_stale_if_error(
    replicas: ReplicaStarter,
    backend_env: dict[str, str],
    pg_databases: dict[str, Any],
    api_client: ApiHelpers,
    tmp_path: Path,
) -> None:
    # no stale-while-revalidate: the stale answer below can only come from stale-if-error
    (base,) = replicas(
        1, extra_env={"EDGE_CACHE_STALE_IF_ERROR": "3", "EDGE_CACHE_STALE_WHILE_REVALIDATE": "0"}
    )
    staff = api_client.staff(base, backend_env)
    shards = ShardMap(("shard_0", "shard_1"))
    tour = api_client.make_tour(staff)
    while shards.alias_for(tour["id"]) != "shard_1":
        tour = api_client.make_tour(staff)
    lb = caching_lb(base, tmp_path)
    page = f"{lb.url}/api/tours/{tour['id']}/"
    shard = pg_databases["servers"][2]
    try:
        first = requests.get(page, timeout=10)
        assert first.headers["X-Cache"] == "MISS"
        stored = time.monotonic()
        shard.stop("fast")
        time.sleep(1.2)  # past max-age=1
        stale = requests.get(page, timeout=15)
        assert stale.status_code == 200 and stale.headers["X-Cache"] == "STALE"
        assert int(stale.headers["Age"]) >= 1
        assert stale.json() == first.json()
        time.sleep(max(0.0, stored + 4.5 - time.monotonic()))  # past max-age + stale-if-error
        down = requests.get(page, timeout=15)
        assert down.status_code == 503 and down.json()["code"] == "shard_unavailable"
        assert down.headers["X-Cache"] == "MISS"
    finally:
        shard.start()
        lb.process.stop(timeout=15)


@pytest.mark.processes
def test_a_stale_tour_list_says_so_through_the_lb(
    replicas: ReplicaStarter,
    backend_env: dict[str, str],
    pg_databases: dict[str, Any],
    api_client: ApiHelpers,
    tmp_path: Path,
) -> None:
    """The backend's list-cache label (X-List-Cache) reaches the client through the lb, whose
    own X-Cache names its micro-cache: a whole page served stale while a shard is down must
    be recognisable as stale (it was not: the label shared X-Cache, which the lb owns)."""
    (base,) = replicas(1, extra_env={"TOUR_LIST_CACHE_SECONDS": "1"})
    staff = api_client.staff(base, backend_env)
    shards = ShardMap(("shard_0", "shard_1"))
    tag = f"Stale{uuid.uuid4().hex[:6]}"
    held = {"shard_0": 0, "shard_1": 0}
    while min(held.values()) < 1:
        tour = api_client.make_tour(staff, name=f"{tag} {uuid.uuid4().hex[:4]}")
        held[shards.alias_for(tour["id"])] += 1
    lb = caching_lb(base, tmp_path)
    # with credentials the lb never answers from its cache: each read reaches the replica
    user = api_client.user(base).with_base(lb.url)
    page = f"/api/tours/?search={tag}&page_size=50"
    shard = pg_databases["servers"][2]
    try:
        whole = user.get(page)
        assert whole.status_code == 200 and whole.json()["count"] == sum(held.values())
        assert (whole.headers["X-List-Cache"], whole.headers["X-Cache"]) == ("miss", "MISS")
        shard.stop("fast")
        time.sleep(1.2)  # past the list cache's 1 s freshness
        stale = user.get(page)
        assert stale.status_code == 200, stale.text
        assert (stale.headers["X-List-Cache"], stale.headers["X-Cache"]) == ("stale", "MISS")
        assert stale.json()["count"] == sum(held.values()) and "partial" not in stale.json()
    finally:
        shard.start()
        lb.process.stop(timeout=15)
