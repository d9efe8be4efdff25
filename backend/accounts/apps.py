"""App config of accounts (users are Django's auth.User on the default database)."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "backend.accounts"
    label = "accounts"
