"""POST /api/bookings/{id}/pay/: the owner pays a pending booking."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.bookings.errors import BookingNotFound
from backend.bookings.selectors import booking_get
from backend.bookings.serializers import BookingSerializer, render_booking

from .serializers import PaySerializer
from .services import booking_pay


class BookingPayApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=PaySerializer, responses={200: BookingSerializer})
    def post(self, request: Request, booking_id: uuid.UUID) -> Response:
        booking = booking_get(booking_id=booking_id, user=request.user)
        if booking.user_id != request.user.pk:
            raise BookingNotFound()  # staff may look, only the owner pays
        serializer = PaySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        booking = booking_pay(
            booking=booking, card=serializer.card(), email=request.user.email or ""
        )
        return Response(render_booking(booking))
