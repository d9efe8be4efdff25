"""Booking endpoints: thin views over services and selectors."""

from __future__ import annotations

import re
import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.common.errors import ValidationFailed
from backend.common.pagination import StandardPagination
from backend.sharding.partial import partial_fields

from .idempotency import MAX_KEY_LENGTH, request_fingerprint
from .selectors import booking_get, booking_list
from .serializers import BookingCreateSerializer, BookingSerializer, render_booking
from .services import booking_cancel, booking_create

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$")


def idempotency_key(request: Request) -> str | None:
    raw = request.headers.get(IDEMPOTENCY_HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if not _KEY_RE.match(key):
        raise ValidationFailed(
            f"{IDEMPOTENCY_HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters.",
            errors={IDEMPOTENCY_HEADER: ["invalid"]},
        )
    return key


class BookingListCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses=BookingSerializer(many=True),
        description="The user's bookings of every shard, newest first. While a shard is down "
        "the list holds the other shards' bookings and says so: `partial: true`, "
        "`unavailable_shards`, header `X-Partial-Shards`.",
    )
    def get(self, request: Request) -> Response:
        paginator = StandardPagination()
        merged = booking_list(user=request.user)
        page = paginator.paginate_queryset(merged, request, view=self)
        response = paginator.get_paginated_response([render_booking(b) for b in page])
        # a shard that is down: the bookings of the others, and the list says what it lacks
        fields, headers = partial_fields(merged.unavailable)
        response.data.update(fields)
        for name, value in headers.items():
            response[name] = value
        return response

    @extend_schema(
        request=BookingCreateSerializer,
        responses={201: BookingSerializer},
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                str,
                OpenApiParameter.HEADER,
                description="Replays the first response for a retry with the same body.",
            )
        ],
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key(request)
        serializer = BookingCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = booking_create(
            user_id=request.user.pk,
            tour_id=data["tour"],
            seats=data["seats"],
            render=render_booking,
            idempotency_key=key,
            fingerprint=request_fingerprint("POST", "/api/bookings/", serializer.data)
            if key
            else "",
        )
        headers = {REPLAYED_HEADER: "true"} if result.replayed else {}
        return Response(result.body, status=result.status, headers=headers)


class BookingDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=BookingSerializer)
    def get(self, request: Request, booking_id: uuid.UUID) -> Response:
        booking = booking_get(booking_id=booking_id, user=request.user)
        return Response(render_booking(booking))


class BookingCancelApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=BookingSerializer)
    def post(self, request: Request, booking_id: uuid.UUID) -> Response:
        booking = booking_get(booking_id=booking_id, user=request.user)
        booking = booking_cancel(booking=booking, actor_id=request.user.pk)
        return Response(render_booking(booking), status=status.HTTP_200_OK)
