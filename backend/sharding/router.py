"""The database router: sharded apps on the shard databases, everything else on "default"."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from backend.sharding.access import pinned_alias
from backend.sharding.shardmap import SHARD_ALIAS_PREFIX, SHARDED_APPS, shard_for


class ShardRoutingError(RuntimeError):
    """A query on a sharded model that names no shard: a programming error, never a guess."""


def _is_sharded(model: type[Model]) -> bool:
    return model._meta.app_label in SHARDED_APPS


def _alias_from_instance(instance: Model) -> str | None:
    if instance._state.db:
        return instance._state.db
    if instance._meta.app_label == "tours" and instance._meta.model_name == "tour":
        return shard_for(instance.pk)
    tour_id = getattr(instance, "tour_id", None)
    if tour_id is not None:
        return shard_for(tour_id)
    return None


class ShardRouter:
    """Explicit `.using(alias)` wins; else an instance hint; else `pinned(alias)`; else raise."""

    def _route(self, model: type[Model], hints: dict[str, Any]) -> str | None:
        if not _is_sharded(model):
            return "default"
        instance = hints.get("instance")
        if instance is not None:
            alias = _alias_from_instance(instance)
            if alias:
                return alias
        alias = pinned_alias()
        if alias:
            return alias
        raise ShardRoutingError(
            f"{model._meta.label} is sharded: query it with .using(shard_for(tour_id))"
        )

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        return self._route(model, hints)

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        return self._route(model, hints)

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        db1, db2 = obj1._state.db, obj2._state.db
        if db1 and db2:
            return db1 == db2
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        on_shard = db.startswith(SHARD_ALIAS_PREFIX)
        return on_shard if app_label in SHARDED_APPS else not on_shard
