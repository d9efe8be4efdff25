"""Typed readers of environment variables; a bad value raises ImproperlyConfigured in one line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bad(name: str, value: str, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name}={value!r}: expected {expected}")


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(name, raw, "0 or 1")


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, raw, "an integer") from None
    if value < minimum:
        raise _bad(name, raw, f"an integer >= {minimum}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, raw, "a number") from None
    if not value >= minimum:  # also refuses nan
        raise _bad(name, raw, f"a number >= {minimum:g}")
    return value


def env_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_str(env: Mapping[str, str], name: str, default: str = "") -> str:
    raw = env.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


def database_config(
    name: str, url: str, *, conn_max_age: int, connect_timeout: int
) -> dict[str, object]:
    """One Django DATABASES entry from a URL; `name` is the variable it came from."""
    import dj_database_url

    try:
        config: dict[str, object] = dict(
            dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True)
        )
    except Exception as exc:
        raise _bad(name, url, f"a database URL ({exc})") from None
    engine = str(config.get("ENGINE", ""))
    options = dict(config.get("OPTIONS") or {})  # type: ignore[call-overload]
    if "sqlite" in engine:
        # threaded workers share the file: WAL lets readers run beside the writer, and a
        # writer waits (instead of failing with "database is locked")
        options.setdefault("timeout", 20)
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    elif "postgresql" in engine:
        options.setdefault("connect_timeout", connect_timeout)
    config["OPTIONS"] = options
    return config


def database_map(env: Mapping[str, str], var_dir: Path) -> dict[str, dict[str, object]]:
    """The backend's DATABASES from the environment: "default" plus "shard_0".."shard_N-1".

    DATABASE_URL (default: SQLite `var_dir/default.sqlite3`), SHARD_URLS (default: two SQLite
    files `var_dir/shard0.sqlite3`, `shard1.sqlite3`), DB_CONN_MAX_AGE, DB_CONNECT_TIMEOUT.
    The one reader of these variables: the settings and the audit (loadtest.verify) share it.
    """
    from backend.sharding.shardmap import shard_alias

    conn_max_age = env_int(env, "DB_CONN_MAX_AGE", 60)
    connect_timeout = env_int(env, "DB_CONNECT_TIMEOUT", 2, minimum=1)
    default_url = env_str(env, "DATABASE_URL", f"sqlite:///{var_dir / 'default.sqlite3'}")
    shard_urls = env_list(
        env,
        "SHARD_URLS",
        [f"sqlite:///{var_dir / 'shard0.sqlite3'}", f"sqlite:///{var_dir / 'shard1.sqlite3'}"],
    )
    databases = {
        "default": database_config(
            "DATABASE_URL",
            default_url,
            conn_max_age=conn_max_age,
            connect_timeout=connect_timeout,
        )
    }
    for index, url in enumerate(shard_urls):
        databases[shard_alias(index)] = database_config(
            "SHARD_URLS", url, conn_max_age=conn_max_age, connect_timeout=connect_timeout
        )
    return databases
