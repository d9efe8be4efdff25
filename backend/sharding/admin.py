"""ShardedModelAdmin: Django admin for a sharded model, one shard at a time.

The change list shows the shard picked in the "shard" filter (default: the first); an
object's pages find its shard from its id (models keyed by tour id, or objects carrying
`tour_id`), and every query Django's admin makes inside a view is pinned to that shard.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse

from backend.sharding.access import pinned
from backend.sharding.shardmap import shard_aliases, shard_for

SHARD_PARAM = "shard"


class ShardFilter(admin.SimpleListFilter):
    title = "shard"
    parameter_name = SHARD_PARAM

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(alias, alias) for alias in shard_aliases()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset  # get_queryset already reads the chosen shard


def _requested_shard(request: HttpRequest) -> str:
    wanted = request.GET.get(SHARD_PARAM, "")
    aliases = shard_aliases()
    return wanted if wanted in aliases else aliases[0]


class ShardedModelAdmin(admin.ModelAdmin):
    """Reads and writes the right shard. Subclasses set `list_filter` to include ShardFilter."""

    def shard_of_object_id(self, object_id: str) -> str | None:
        """The shard of the object with this id (a tour id for Tour); None if not derivable."""
        try:
            return shard_for(uuid.UUID(str(object_id)))
        except ValueError:
            return None

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        alias = getattr(request, "_admin_shard", None) or _requested_shard(request)
        return super().get_queryset(request).using(alias)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        alias = self.shard_of_object_id(object_id)
        if alias is None:
            return None
        request._admin_shard = alias  # type: ignore[attr-defined]
        return super().get_object(request, object_id, from_field)

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        new_id = getattr(request, "_admin_new_id", None)
        if not change and new_id is not None:
            obj.pk = new_id
        obj.save(using=obj._state.db or shard_for(obj.pk))

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        obj.delete(using=obj._state.db)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        queryset.delete()

    def _pinned_view(
        self, request: HttpRequest, object_id: str | None, view: Any, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        alias = (object_id and self.shard_of_object_id(object_id)) or _requested_shard(request)
        request._admin_shard = alias  # type: ignore[attr-defined]
        with pinned(alias):
            response = view(request, *args, **kwargs)
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()  # lazy templates query while rendering: keep them pinned
            return response

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return self._pinned_view(request, None, super().changelist_view, extra_context)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        if object_id is None:
            # a new object: choose its id now, so the whole view (Django wraps it in a
            # transaction on the model's database) runs on the shard the object will live on
            new_id = uuid.uuid4()
            request._admin_new_id = new_id  # type: ignore[attr-defined]
            return self._pinned_view(
                request, str(new_id), super().changeform_view, object_id, form_url, extra_context
            )
        return self._pinned_view(
            request, object_id, super().changeform_view, object_id, form_url, extra_context
        )

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        return self._pinned_view(request, object_id, super().delete_view, object_id, extra_context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        return self._pinned_view(request, object_id, super().history_view, object_id, extra_context)
