"""Django admin on sharded tours: lists one shard at a time, edits, adds and deletes on the
right shard."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from backend.sharding.shardmap import ShardMap
from tests.backend.conftest import STAFF_PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.processes]

INLINE = {
    "photos-TOTAL_FORMS": "0",
    "photos-INITIAL_FORMS": "0",
    "photos-MIN_NUM_FORMS": "0",
    "photos-MAX_NUM_FORMS": "1000",
}


def _csrf(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=30)
    assert page.status_code == 200, page.text[:500]
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_admin_reads_and_writes_the_tours_shard(
    backend_env: dict[str, str], replicas: Any, api_client: Any
) -> None:
    (base,) = replicas(1, env=backend_env)
    staff = api_client.staff(base, backend_env)
    two = ShardMap(("shard_0", "shard_1"))
    by_shard: dict[str, dict[str, Any]] = {}
    while len(by_shard) < 2:
        tour = api_client.make_tour(staff)
        by_shard.setdefault(two.alias_for(tour["id"]), tour)

    admin = requests.Session()
    token = _csrf(admin, f"{base}/admin/login/")
    login = admin.post(
        f"{base}/admin/login/?next=/admin/",
        data={"username": "staff", "password": STAFF_PASSWORD, "csrfmiddlewaretoken": token},
        allow_redirects=False,
        timeout=30,
    )
    assert login.status_code == 302, login.text[:500]

    for alias, tour in by_shard.items():
        other = by_shard["shard_1" if alias == "shard_0" else "shard_0"]
        listing = admin.get(f"{base}/admin/tours/tour/?shard={alias}", timeout=30)
        assert listing.status_code == 200
        assert tour["name"] in listing.text and other["name"] not in listing.text

    target = by_shard["shard_1"]
    change_url = f"{base}/admin/tours/tour/{target['id']}/change/"
    token = _csrf(admin, change_url)
    form = {
        "csrfmiddlewaretoken": token,
        "name": "Edited in admin",
        "description": "d",
        "price": "42.00",
        "start_date": target["start_date"],
        "end_date": target["end_date"],
        "capacity": "12",
        "_save": "Save",
        **INLINE,
    }
    saved = admin.post(change_url, data=form, allow_redirects=False, timeout=30)
    assert saved.status_code == 302, saved.text[:3000]
    shown = requests.get(f"{base}/api/tours/{target['id']}/", timeout=30).json()
    assert shown["name"] == "Edited in admin" and shown["capacity"] == 12
    assert shown["seats_available"] == 12

    add_url = f"{base}/admin/tours/tour/add/"
    token = _csrf(admin, add_url)
    added = admin.post(
        add_url,
        data={**form, "csrfmiddlewaretoken": token, "name": "Added in admin", "capacity": "7"},
        allow_redirects=False,
        timeout=30,
    )
    assert added.status_code == 302, added.text[:3000]
    found = requests.get(f"{base}/api/tours/?search=Added%20in%20admin", timeout=30).json()
    assert found["count"] == 1 and found["results"][0]["seats_available"] == 7

    delete_url = f"{base}/admin/tours/tour/{by_shard['shard_0']['id']}/delete/"
    token = _csrf(admin, delete_url)
    deleted = admin.post(
        delete_url,
        data={"csrfmiddlewaretoken": token, "post": "yes"},
        allow_redirects=False,
        timeout=30,
    )
    assert deleted.status_code == 302, deleted.text[:3000]
    gone = requests.get(f"{base}/api/tours/{by_shard['shard_0']['id']}/", timeout=30)
    assert gone.status_code == 404
