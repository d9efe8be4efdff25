"""Bearer authentication: simplejwt's, also refusing tokens on the revocation list."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework import exceptions
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from backend.accounts.models import RevokedToken
from backend.accounts.tokens import revoked_q


class JWTAuthentication(authentication.JWTAuthentication):
    """The user lookup also asks whether the token (its `jti`) or its session (its family) has
    been revoked, in the same single query simplejwt already made for the user."""

    def get_user(self, validated_token: Token) -> Any:
        user_id = validated_token.get(api_settings.USER_ID_CLAIM)
        if user_id is None:
            raise exceptions.AuthenticationFailed(
                "Token contained no recognizable user identification", code="token_not_valid"
            )
        revoked = RevokedToken.objects.using("default").filter(revoked_q(validated_token.payload))
        user = (
            self.user_model.objects.filter(**{api_settings.USER_ID_FIELD: user_id})
            .annotate(token_revoked=Exists(revoked))
            .first()
        )
        if user is None:
            raise exceptions.AuthenticationFailed("User not found", code="user_not_found")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise exceptions.AuthenticationFailed("User is inactive", code="user_inactive")
        if user.token_revoked:
            raise exceptions.AuthenticationFailed(
                "Token has been revoked (logged out or reused).", code="token_revoked"
            )
        return user


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI bearer scheme for this class too (drf-spectacular matches exact classes)."""

    target_class = "backend.accounts.authentication.JWTAuthentication"
