"""Accounts HTTP API: register, logout (blacklists the refresh token), me."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from backend.accounts import services
from backend.accounts.serializers import LogoutInput, MeOutput, RegisterInput, UserOutput
from backend.common.errors import ValidationFailed


class RegisterApi(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list[type] = []

    @extend_schema(request=RegisterInput, responses={201: UserOutput}, tags=["auth"])
    def post(self, request: Request) -> Response:
        data = RegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_register(**data.validated_data)
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)


class LogoutApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=LogoutInput, responses={205: None}, tags=["auth"])
    def post(self, request: Request) -> Response:
        data = LogoutInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = RefreshToken(data.validated_data["refresh"])
        except TokenError as exc:
            raise InvalidToken(str(exc)) from None
        if str(token.get("user_id")) != str(request.user.pk):
            raise ValidationFailed(
                "Invalid input.", errors={"refresh": ["This refresh token is not yours."]}
            )
        token.blacklist()
        return Response(status=status.HTTP_205_RESET_CONTENT)


class MeApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={200: MeOutput}, tags=["auth"])
    def get(self, request: Request) -> Response:
        return Response(MeOutput(request.user).data)
