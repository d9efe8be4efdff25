"""GET/POST /api/tours/{id}/reviews/: public list, guests with a confirmed booking write."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.common.pagination import StandardPagination

from .selectors import review_list
from .serializers import ReviewCreateSerializer, ReviewSerializer
from .services import review_create


class ReviewListCreateApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(responses=ReviewSerializer(many=True))
    def get(self, request: Request, tour_id: uuid.UUID) -> Response:
        paginator = StandardPagination()
        page = paginator.paginate_queryset(review_list(tour_id=tour_id), request, view=self)
        return paginator.get_paginated_response(ReviewSerializer(page, many=True).data)

    @extend_schema(request=ReviewCreateSerializer, responses={201: ReviewSerializer})
    def post(self, request: Request, tour_id: uuid.UUID) -> Response:
        serializer = ReviewCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        review = review_create(
            tour_id=tour_id,
            user_id=request.user.pk,
            author=request.user.get_username(),
            rating=serializer.validated_data["rating"],
            comment=serializer.validated_data["comment"],
        )
        return Response(ReviewSerializer(review).data, status=201)
