"""Tours HTTP API: public reads (the list merged over shards and cached), staff writes."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from backend.common.pagination import StandardPagination
from backend.sharding.partial import partial_fields
from backend.tours import selectors, services
from backend.tours.cache import tour_list_cache
from backend.tours.serializers import (
    PhotoInput,
    PhotoOutput,
    TourFilterInput,
    TourInput,
    TourOutput,
)

CACHE_HEADER = "X-List-Cache"  # the lb owns X-Cache (its micro-cache) and drops this one


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


def _page_links(
    request: Request, page: int, page_size: int, count: int
) -> tuple[str | None, str | None]:
    url = request.build_absolute_uri()
    nxt = replace_query_param(url, "page", page + 1) if page * page_size < count else None
    if page <= 1:
        prev = None
    elif page == 2:
        prev = remove_query_param(url, "page")
    else:
        prev = replace_query_param(url, "page", page - 1)
    return nxt, prev


class TourListApi(GenericAPIView):
    permission_classes = [IsStaffOrReadOnly]
    pagination_class = StandardPagination
    serializer_class = TourOutput

    @extend_schema(
        parameters=[TourFilterInput],
        responses=TourOutput(many=True),
        tags=["tours"],
        description="Tours of every shard as one list: filters, search by name, ordering; "
        "cached for a few seconds and invalidated by tour writes. While a shard is down the "
        "list holds the other shards' tours and says so: `partial: true`, "
        "`unavailable_shards`, header `X-Partial-Shards`.",
    )
    def get(self, request: Request) -> Response:
        query = TourFilterInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = dict(query.validated_data)
        page = params.pop("page")
        page_size = min(params.pop("page_size"), StandardPagination.max_page_size)
        filters = selectors.TourFilters(**params)

        def compute() -> dict[str, Any]:
            found = selectors.tour_list(filters=filters, page=page, page_size=page_size)
            return {
                "count": found.count,
                "results": TourOutput(found.tours, many=True).data,
                "unavailable": list(found.unavailable),
            }

        data, how = tour_list_cache.get_or_compute(
            {**params, "page": page, "page_size": page_size}, compute
        )
        if page > 1 and not data["results"]:
            raise selectors.TourNotFound("Invalid page: past the last page.")
        nxt, prev = _page_links(request, page, page_size, data["count"])
        body = {"count": data["count"], "next": nxt, "previous": prev, "results": data["results"]}
        fields, headers = partial_fields(data.get("unavailable") or ())
        return Response({**body, **fields}, headers={CACHE_HEADER: how, **headers})

    @extend_schema(request=TourInput, responses={201: TourOutput}, tags=["tours"])
    def post(self, request: Request) -> Response:
        data = TourInput(data=request.data)
        data.is_valid(raise_exception=True)
        tour = services.tour_create(**data.validated_data)
        tour = selectors.tour_get(tour_id=tour.id)
        return Response(TourOutput(tour).data, status=status.HTTP_201_CREATED)


class TourDetailApi(APIView):
    permission_classes = [IsStaffOrReadOnly]

    @extend_schema(responses=TourOutput, tags=["tours"])
    def get(self, request: Request, tour_id: uuid.UUID) -> Response:
        return Response(TourOutput(selectors.tour_get(tour_id=tour_id)).data)

    def _update(self, request: Request, tour_id: uuid.UUID, partial: bool) -> Response:
        data = TourInput(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        services.tour_update(tour_id=tour_id, changes=dict(data.validated_data))
        return Response(TourOutput(selectors.tour_get(tour_id=tour_id)).data)

    @extend_schema(request=TourInput, responses=TourOutput, tags=["tours"])
    def put(self, request: Request, tour_id: uuid.UUID) -> Response:
        return self._update(request, tour_id, partial=False)

    @extend_schema(request=TourInput, responses=TourOutput, tags=["tours"])
    def patch(self, request: Request, tour_id: uuid.UUID) -> Response:
        return self._update(request, tour_id, partial=True)

    @extend_schema(responses={204: None}, tags=["tours"])
    def delete(self, request: Request, tour_id: uuid.UUID) -> Response:
        services.tour_delete(tour_id=tour_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TourPhotoApi(APIView):
    permission_classes = [permissions.IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": PhotoInput}, responses={201: PhotoOutput}, tags=["tours"]
    )
    def post(self, request: Request, tour_id: uuid.UUID) -> Response:
        # oversized bodies were refused (413) by BodyLimitMiddleware before being read
        data = PhotoInput(data=request.data)
        data.is_valid(raise_exception=True)
        photo = services.tour_photo_add(tour_id=tour_id, upload=data.validated_data["file"])
        return Response(PhotoOutput(photo).data, status=status.HTTP_201_CREATED)
