"""Accounts HTTP API: register, log in (guarded), refresh, logout (revokes the session), me."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from backend.accounts import services, tokens
from backend.accounts.guard import client_address, guard_from_settings
from backend.accounts.serializers import LogoutInput, MeOutput, RegisterInput, UserOutput
from backend.common.errors import ValidationFailed

TOO_MANY_LOGINS = "Too many failed logins."


def login_locked(wait: int) -> exceptions.Throttled:
    """The one answer to a locked account or address (the same for known and unknown names)."""
    return exceptions.Throttled(wait=wait, detail=TOO_MANY_LOGINS, code="login_throttled")


class TokenObtainApi(TokenObtainPairView):
    """POST /api/auth/token/: the password is checked only when neither the account nor the
    client address is backing off; failures and successes feed the guard."""

    serializer_class = tokens.TokenObtainInput

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = request.data  # parse first: a malformed body is a 400, not a login attempt
        name = data.get("username") if isinstance(data, dict) else None
        username = name if isinstance(name, str) and name else None
        address = client_address(request.META)
        guard = guard_from_settings()
        wait = guard.retry_after(username, address)
        if wait:
            raise login_locked(wait)
        try:
            response = super().post(request, *args, **kwargs)
        except exceptions.AuthenticationFailed:
            guard.failed(username, address)
            raise
        if username is not None and response.status_code == status.HTTP_200_OK:
            guard.succeeded(username)
        return response


class TokenRefreshApi(TokenRefreshView):
    """POST /api/auth/token/refresh/: rotation within the family; reuse revokes the family."""

    serializer_class = tokens.TokenRefreshInput


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
    """Ends the session: its refresh token, every token of its family and the access token
    used here are refused from now on (access tokens by `jti` until they expire)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=LogoutInput, responses={205: None}, tags=["auth"])
    def post(self, request: Request) -> Response:
        data = LogoutInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = tokens.refresh_checked(data.validated_data["refresh"])
        except TokenError as exc:
            raise InvalidToken(str(exc)) from None
        if str(token.get("user_id")) != str(request.user.pk):
            raise ValidationFailed(
                "Invalid input.", errors={"refresh": ["This refresh token is not yours."]}
            )
        tokens.session_revoke(refresh=token, access=request.auth)
        return Response(status=status.HTTP_205_RESET_CONTENT)


class MeApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={200: MeOutput}, tags=["auth"])
    def get(self, request: Request) -> Response:
        return Response(MeOutput(request.user).data)
