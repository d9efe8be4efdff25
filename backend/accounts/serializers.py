"""Input/output shapes of the accounts API."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers


class RegisterInput(serializers.Serializer):
    username = serializers.RegexField(
        r"^[\w.@+-]+\Z", max_length=150, help_text="Letters, digits and @/./+/-/_ only."
    )
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(write_only=True, max_length=128, trim_whitespace=False)

    def validate_username(self, value: str) -> str:
        if get_user_model().objects.using("default").filter(username__iexact=value).exists():
            raise serializers.ValidationError("A user with that username already exists.")
        return value


class UserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()


class MeOutput(UserOutput):
    is_staff = serializers.BooleanField()


class LogoutInput(serializers.Serializer):
    refresh = serializers.CharField()
