"""The shard router, fan-out and shard failure through the ORM, in this process (django_orm)."""

from __future__ import annotations

import pytest

from tests.support.databases import tour_on

pytestmark = [pytest.mark.postgres]


def test_router_refuses_a_sharded_query_that_names_no_shard(django_orm: dict[str, str]) -> None:
    from backend.sharding import pinned
    from backend.sharding.router import ShardRoutingError
    from backend.tours.models import Tour

    tour = tour_on("shard_1")
    with pytest.raises(ShardRoutingError, match=r"tours\.Tour is sharded"):
        Tour.objects.filter(pk=tour.pk).exists()
    assert Tour.objects.using("shard_1").filter(pk=tour.pk).exists()
    assert not Tour.objects.using("shard_0").filter(pk=tour.pk).exists()
    with pinned("shard_1"):
        assert Tour.objects.filter(pk=tour.pk).exists()
    # an instance knows its shard: saving it again goes back there
    loaded = Tour.objects.using("shard_1").get(pk=tour.pk)
    loaded.name = "renamed"
    loaded.save()
    assert Tour.objects.using("shard_1").get(pk=tour.pk).name == "renamed"


def test_fan_out_visits_every_shard_once(django_orm: dict[str, str]) -> None:
    from backend.sharding import fan_out, shard_aliases
    from backend.tours.models import Tour

    a, b = tour_on("shard_0"), tour_on("shard_1")
    seen = fan_out(
        lambda alias: [(alias, pk) for pk in Tour.objects.using(alias).values_list("pk", flat=True)]
    )
    assert ("shard_0", a.pk) in seen and ("shard_1", b.pk) in seen
    assert len(seen) == len(set(seen))
    assert shard_aliases() == ["shard_0", "shard_1"]


def test_unreachable_shard_raises_shard_unavailable(django_orm: dict[str, str]) -> None:
    from django.db import connections

    from backend.common.errors import ShardUnavailable
    from backend.sharding import on_shard, shard_atomic
    from backend.sharding.circuit import circuits
    from backend.tours.models import Tour

    before = Tour.objects.using("shard_0").count()
    tour_on("shard_0")
    conn = connections["shard_0"]
    conn.close()
    saved = dict(conn.settings_dict)
    conn.settings_dict["PORT"] = 1  # nothing listens there: connection refused
    try:
        with pytest.raises(ShardUnavailable) as caught, on_shard("shard_0"):
            Tour.objects.using("shard_0").count()
        assert caught.value.alias == "shard_0" and caught.value.status == 503
        assert caught.value.headers()["Retry-After"]
        with pytest.raises(ShardUnavailable), shard_atomic("shard_0"):
            pass
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)
    # the shard's circuit is open: the next try fails fast, without connecting
    with pytest.raises(ShardUnavailable) as fast, on_shard("shard_0"):
        Tour.objects.using("shard_0").count()
    assert "failed fast" in str(fast.value.__cause__)
    circuits.reset()
    # the shard is back, with its rows: the new tour and everything before it
    assert Tour.objects.using("shard_0").count() == before + 1
