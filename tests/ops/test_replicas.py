"""The one replica environment (ops/replicas.py), as ops up, the benches and the tests use it."""

from __future__ import annotations

from pathlib import Path

from ops.replicas import GUNICORN_ARGV, bind_env, replica_env
from ops.stack import Options, Stores, backend_environment, build_plan


def test_replica_env_names_the_stores_and_blanks_redis_without_one(tmp_path: Path) -> None:
    env = replica_env(
        database_url="postgresql://h/d",
        shard_urls=["postgresql://h/s0", "postgresql://h/s1"],
        secret_key="k",
        var_dir=tmp_path,
        workers=2,
        EMAIL_BACKEND="x.Backend",
    )
    assert env["DATABASE_URL"] == "postgresql://h/d"
    assert env["SHARD_URLS"] == "postgresql://h/s0,postgresql://h/s1"
    assert env["REDIS_URL"] == ""  # the in-process cache, never an inherited server
    assert (env["DJANGO_SECRET_KEY"], env["DJANGO_DEBUG"]) == ("k", "0")
    assert (env["GUNICORN_WORKERS"], env["GUNICORN_THREADS"]) == ("2", "4")
    assert env["BACKEND_VAR_DIR"] == str(tmp_path) and env["EMAIL_BACKEND"] == "x.Backend"


def test_bind_env_gives_the_address_and_drops_port() -> None:
    bound = bind_env({"PORT": "5000", "A": "1"}, "127.0.0.1", 8123)
    assert bound == {"A": "1", "GUNICORN_BIND": "127.0.0.1:8123"}


def test_ops_up_keeps_the_operators_tunables_but_never_their_stores(tmp_path: Path) -> None:
    stores = Stores("sqlite:///d", ("sqlite:///s0",), None, "test")
    environ = {
        "GUNICORN_THREADS": "2",
        "DJANGO_DEBUG": "0",
        "REDIS_URL": "redis://elsewhere",
        "DJANGO_SETTINGS_MODULE": "",
    }
    env = backend_environment(environ, stores, "secret", tmp_path)
    assert (env["GUNICORN_THREADS"], env["DJANGO_DEBUG"]) == ("2", "0")  # the operator's
    assert (env["GUNICORN_WORKERS"], env["DJANGO_SECRET_KEY"]) == ("1", "secret")  # defaults
    assert env["DATABASE_URL"] == "sqlite:///d" and env["SHARD_URLS"] == "sqlite:///s0"
    assert "REDIS_URL" not in env and "DJANGO_SETTINGS_MODULE" not in env
    plan = build_plan(Options(var=tmp_path, replicas=2), environ, stores, "secret")
    assert [s.argv for s in plan.replicas] == [GUNICORN_ARGV] * 2
    assert [s.env["GUNICORN_BIND"] for s in plan.replicas] == ["127.0.0.1:8001", "127.0.0.1:8002"]
