"""The one database map (backend.common.env.database_map), read by the settings and the audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from backend.common.env import database_map, env_float


def test_defaults_are_the_sqlite_files_under_the_var_dir() -> None:
    databases = database_map({}, Path("/srv/var"))
    assert list(databases) == ["default", "shard_0", "shard_1"]
    assert databases["shard_1"]["NAME"] == "/srv/var/shard1.sqlite3"
    options = databases["default"]["OPTIONS"]
    assert (
        options["transaction_mode"] == "IMMEDIATE" and "journal_mode=WAL" in options["init_command"]
    )


def test_postgresql_urls_get_the_connect_timeout_and_persistent_connections() -> None:
    env = {
        "DATABASE_URL": "postgresql://u@db:5432/main",
        "SHARD_URLS": "postgresql://u@s0:5432/a, postgresql://u@s1:5432/b,postgresql://u@s2/c",
        "DB_CONNECT_TIMEOUT": "3",
        "DB_CONN_MAX_AGE": "30",
    }
    databases = database_map(env, Path("/unused"))
    assert list(databases) == ["default", "shard_0", "shard_1", "shard_2"]
    assert databases["shard_1"]["HOST"] == "s1" and databases["shard_1"]["NAME"] == "b"
    assert databases["shard_2"]["OPTIONS"] == {"connect_timeout": 3}
    assert databases["default"]["CONN_MAX_AGE"] == 30
    assert databases["default"]["CONN_HEALTH_CHECKS"] is True


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SHARD_URLS": "nonsense://x"}, "SHARD_URLS='nonsense://x': expected a database URL"),
        ({"DB_CONNECT_TIMEOUT": "0"}, "DB_CONNECT_TIMEOUT='0': expected an integer >= 1"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        database_map(env, Path("/unused"))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_env_float() -> None:
    assert env_float({}, "X", 2.0) == 2.0
    assert env_float({"X": "0.5"}, "X", 2.0) == 0.5
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ImproperlyConfigured, match="X="):
            env_float({"X": bad}, "X", 2.0)
