"""Liveness, readiness and shard failure: a stopped shard server is named by /readyz, its tours
get 503 + Retry-After, the other shard keeps working (lists answer partially), and all
recovers after the restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from backend.sharding.shardmap import ShardMap
from tests.backend.conftest import Api
from tests.support.processes import ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


@pytest.mark.parametrize("debug", ["0", "1"])
def test_missing_secret_key_refuses_to_start_with_a_clear_message(debug: str) -> None:
    """No key, no start, with DJANGO_DEBUG=1 too: there is no key written in the repository."""
    env = {"PATH": "/usr/bin:/bin", "DJANGO_DEBUG": debug, "BACKEND_VAR_DIR": "/tmp/unused-var"}
    done = subprocess.run(
        [sys.executable, "-m", "backend", "check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "DJANGO_SECRET_KEY is unset" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    bad = dict(env, DJANGO_SECRET_KEY="k", TOUR_LIST_CACHE_SECONDS="soon")
    done = subprocess.run(
        [sys.executable, "-m", "backend", "check"],
        env=bad,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "TOUR_LIST_CACHE_SECONDS='soon'" in done.stderr


@pytest.mark.slow
@pytest.mark.redis
def test_a_stopped_shard_fails_its_own_tours_only_and_readyz_names_it(
    backend_env: dict[str, str],
    pg_databases: dict[str, Any],
    replicas: Any,
    api_client: Any,
    fresh_redis: Any,
) -> None:
    (base,) = replicas(1, env=backend_env, extra_env={"REDIS_URL": fresh_redis.url})
    assert requests.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"default", "shard_0", "shard_1", "redis"}

    staff = api_client.staff(base, backend_env)
    two = ShardMap(("shard_0", "shard_1"))
    by_shard: dict[str, dict[str, Any]] = {}
    while len(by_shard) < 2:
        tour = api_client.make_tour(staff)
        by_shard.setdefault(two.alias_for(tour["id"]), tour)
    anonymous = Api(base)

    shard1_server = pg_databases["servers"][2]
    shard1_server.stop("fast")
    try:
        ready = requests.get(f"{base}/readyz", timeout=15)
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["shard_1"]
        assert "shard_1" in ready.json()["detail"] and ready.headers["Retry-After"]

        ok = anonymous.get(f"/api/tours/{by_shard['shard_0']['id']}/")
        assert ok.status_code == 200 and ok.json()["id"] == by_shard["shard_0"]["id"]
        down = anonymous.get(f"/api/tours/{by_shard['shard_1']['id']}/")
        assert down.status_code == 503
        assert down.json()["code"] == "shard_unavailable"
        assert int(down.headers["Retry-After"]) >= 1
        patch = staff.patch(f"/api/tours/{by_shard['shard_1']['id']}/", json={"name": "x"})
        assert patch.status_code == 503 and patch.json()["code"] == "shard_unavailable"
        # the merged list holds the live shard's tours and says what it lacks
        listing = anonymous.get("/api/tours/?page_size=100")
        assert listing.status_code == 200 and listing.json()["partial"] is True
        assert listing.json()["unavailable_shards"] == ["shard_1"]
        assert listing.headers["X-Partial-Shards"] == "shard_1"
        ids = {t["id"] for t in listing.json()["results"]}
        assert by_shard["shard_0"]["id"] in ids and by_shard["shard_1"]["id"] not in ids
        # new tours for the live shard still work
        assert (
            staff.patch(f"/api/tours/{by_shard['shard_0']['id']}/", json={"name": "y"}).status_code
            == 200
        )
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'backend_shard_unavailable_total{shard="shard_1"}' in metrics
    finally:
        shard1_server.start()

    # the shard's circuit lets a probe through every SHARD_CIRCUIT_SECONDS: back within seconds
    deadline = time.monotonic() + 15
    while (back := anonymous.get(f"/api/tours/{by_shard['shard_1']['id']}/")).status_code != 200:
        assert back.status_code == 503 and time.monotonic() < deadline, back.text
        time.sleep(0.2)
    assert requests.get(f"{base}/readyz", timeout=15).status_code == 200

    fresh_redis.kill()
    ready = requests.get(f"{base}/readyz", timeout=15)
    assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]
    # the cache is an optimisation: the list still answers without it
    assert anonymous.get("/api/tours/").status_code == 200


def test_metrics_count_requests(backend_env: dict[str, str], replicas: Any) -> None:
    (base,) = replicas(1, env=backend_env, extra_env={"GUNICORN_WORKERS": "2"})
    for _ in range(6):
        requests.get(f"{base}/api/tours/", headers={"X-Request-ID": "req-abc-123"}, timeout=10)
    resp = requests.get(f"{base}/api/tours/", headers={"X-Request-ID": "req-abc-123"}, timeout=10)
    assert resp.headers["X-Request-ID"] == "req-abc-123"
    text = requests.get(f"{base}/metrics", timeout=10).text
    # multiprocess mode: one scrape sums both workers
    line = next(
        row
        for row in text.splitlines()
        if row.startswith('backend_http_requests_total{method="GET",status="200"}')
    )
    assert float(line.split()[-1]) >= 7
    assert "backend_http_request_duration_seconds_bucket" in text
    # one structured access line per request, carrying the lb's request id
    lines = [
        json.loads(row)
        for row in replicas.processes[-1].log(200_000).splitlines()
        if row.startswith("{")
    ]
    access = [
        e
        for e in lines
        if e.get("logger") == "backend.access" and e.get("request_id") == "req-abc-123"
    ]
    assert len(access) == 7
    assert access[0]["path"] == "/api/tours/" and access[0]["status"] == 200
    assert access[0]["duration_ms"] >= 0
    generated = requests.get(
        f"{base}/healthz", headers={"X-Request-ID": "bad id with spaces"}, timeout=10
    )
    assert generated.headers["X-Request-ID"] != "bad id with spaces"
