"""Revoked tokens and sessions (the default database): refused until they would have expired."""

from __future__ import annotations

from django.db import models


class RevokedToken(models.Model):
    """One entry of the denylist: `jti:<jti>` (one token) or `fam:<family>` (a whole session).

    Kept until `expires_at`, the moment every token it covers has expired on its own anyway.
    """

    key = models.CharField(primary_key=True, max_length=100)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.key
