"""Account services: user registration and staff creation (default database)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from backend.common.errors import ValidationFailed


def user_register(*, username: str, email: str, password: str) -> AbstractUser:
    """Create a user after Django's password validators; field errors -> ValidationFailed."""
    User = get_user_model()
    candidate = User(username=username, email=email)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise ValidationFailed("Invalid input.", errors={"password": list(exc.messages)}) from None
    try:
        with transaction.atomic(using="default"):
            user = User.objects.create_user(username=username, email=email, password=password)
    except IntegrityError:
        raise ValidationFailed(
            "Invalid input.", errors={"username": ["A user with that username already exists."]}
        ) from None
    return user


def staff_ensure(*, username: str, password: str, email: str = "") -> tuple[AbstractUser, bool]:
    """Create or update a staff superuser with this password; returns (user, created)."""
    User = get_user_model()
    with transaction.atomic(using="default"):
        user, created = User.objects.get_or_create(username=username, defaults={"email": email})
        user.is_staff = True
        user.is_superuser = True
        if email:
            user.email = email
        user.set_password(password)
        user.save()
    return user, created
