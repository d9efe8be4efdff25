"""Accounts: registration and JWT auth; users live on the default database."""
