"""JWT sessions: every login starts a token family; reuse and logout revoke by family and `jti`.

A login mints a refresh token with a fresh `fam` claim; rotation (`/token/refresh/`) keeps the
claim, and simplejwt copies it into every access token, so all tokens of one login share it.
- A refresh token presented again after it was rotated away (blacklisted) is the sign of a
  stolen token: the whole family is revoked, the newer refresh token and its access tokens too
  (OAuth 2.0 Security BCP, refresh token rotation with reuse detection).
- Logout revokes the family and the access token it was called with, by `jti`.
Revocations live in `RevokedToken` on the default database (shared by every replica) until the
tokens they cover have expired; `backend.accounts.authentication` refuses them on each request.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.contrib.rest_framework_simplejwt import (
    TokenObtainPairSerializerExtension,
    TokenRefreshSerializerExtension,
)
from rest_framework import exceptions
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken, Token, UntypedToken

from backend.accounts.models import RevokedToken

FAMILY_CLAIM = "fam"


def revocation_keys(payload: Mapping[str, Any]) -> list[str]:
    """The denylist keys that would refuse a token with this payload."""
    keys = [f"jti:{payload.get(api_settings.JTI_CLAIM, '')}"]
    family = payload.get(FAMILY_CLAIM)
    if family:
        keys.append(f"fam:{family}")
    return keys


def revoked_q(payload: Mapping[str, Any]) -> Q:
    return Q(key__in=revocation_keys(payload), expires_at__gt=timezone.now())


def is_revoked(payload: Mapping[str, Any]) -> bool:
    return RevokedToken.objects.using("default").filter(revoked_q(payload)).exists()


def _expiry(payload: Mapping[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(payload.get("exp", 0)), tz=UTC)


def revoke(entries: Mapping[str, datetime]) -> None:
    """Add denylist entries (key -> until); expired entries are purged on the way."""
    now = timezone.now()
    objects = RevokedToken.objects.using("default")
    objects.filter(expires_at__lte=now).delete()
    objects.bulk_create(
        [RevokedToken(key=key, expires_at=until) for key, until in entries.items() if until > now],
        ignore_conflicts=True,
    )


def family_revoke(payload: Mapping[str, Any]) -> None:
    """Revoke the session a token belongs to (or, for a token without a family, the token)."""
    # no token of a family outlives the newest refresh token, minted at most now
    until = timezone.now() + api_settings.REFRESH_TOKEN_LIFETIME
    entries = {f"jti:{payload.get(api_settings.JTI_CLAIM, '')}": max(until, _expiry(payload))}
    family = payload.get(FAMILY_CLAIM)
    if family:
        entries[f"fam:{family}"] = until
    revoke(entries)


def session_revoke(*, refresh: Token, access: Token | None) -> None:
    """Logout: the refresh token is blacklisted, its family and the access token revoked."""
    refresh.blacklist()  # type: ignore[attr-defined]
    family_revoke(refresh.payload)
    if access is not None:
        revoke({f"jti:{access.get(api_settings.JTI_CLAIM, '')}": _expiry(access.payload)})


def refresh_checked(raw: str) -> RefreshToken:
    """A valid, unrevoked refresh token; a rotated one presented again revokes its family.

    Raises TokenError (401 in the views) for anything else.
    """
    untyped = UntypedToken(raw)  # signature and expiry; not the blacklist yet
    payload = untyped.payload
    if payload.get(api_settings.TOKEN_TYPE_CLAIM) != RefreshToken.token_type:
        raise TokenError("Token has wrong type")
    if is_revoked(payload):
        raise TokenError("Token has been revoked")
    if BlacklistedToken.objects.filter(token__jti=payload.get(api_settings.JTI_CLAIM)).exists():
        family_revoke(payload)
        raise TokenError("Token is blacklisted; its session has been revoked")
    return RefreshToken(raw)


class TokenObtainInput(TokenObtainPairSerializer):
    """`{username, password}` -> a new token family."""

    @classmethod
    def get_token(cls, user: Any) -> Token:
        token = super().get_token(user)
        token[FAMILY_CLAIM] = uuid.uuid4().hex
        return token


class TokenRefreshInput(TokenRefreshSerializer):
    """`{refresh}` -> rotated tokens of the same family, with reuse detection."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = refresh_checked(attrs["refresh"])
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise exceptions.AuthenticationFailed(
                self.error_messages["no_active_account"], "no_active_account"
            )
        return super().validate(attrs)


# the OpenAPI shapes of simplejwt's serializers, for these subclasses too (exact-class matches)
class TokenObtainInputSchema(TokenObtainPairSerializerExtension):
    target_class = "backend.accounts.tokens.TokenObtainInput"


class TokenRefreshInputSchema(TokenRefreshSerializerExtension):
    target_class = "backend.accounts.tokens.TokenRefreshInput"
