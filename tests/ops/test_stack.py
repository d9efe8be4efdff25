"""The local stack's plan, port-clash check and supervisor (python -m ops up's building blocks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.stack import Options, Service, build_plan, sqlite_stores, stores_from_env, summary
from ops.supervisor import StackError, Supervisor, backoff
from ops.up import check_ports, parse_args, private_file, staff_username
from tests.support.net import free_port


def plan_for(tmp_path: Path, environ=None, **options):
    opts = Options(var=tmp_path / "var", **options)
    environ = environ or {}
    stores = stores_from_env(environ, sqlite_stores(opts.var))
    return build_plan(opts, environ, stores, secret_key="s3cret-for-tests")


def test_embedded_defaults_are_sqlite_under_var_with_debug_and_one_shared_secret(tmp_path):
    plan = plan_for(tmp_path)
    db = (tmp_path / "var" / "db").resolve()
    assert plan.stores.database_url == f"sqlite:///{db}/default.sqlite3"
    assert plan.stores.shard_urls == (
        f"sqlite:///{db}/shard0.sqlite3",
        f"sqlite:///{db}/shard1.sqlite3",
    )
    assert len(plan.replicas) == 3
    for replica in plan.replicas:
        assert replica.env["DJANGO_DEBUG"] == "1"
        # one secret for every replica: a token signed by one verifies on all
        assert replica.env["DJANGO_SECRET_KEY"] == "s3cret-for-tests"
        assert replica.env["SHARD_URLS"] == ",".join(plan.stores.shard_urls)
        assert "REDIS_URL" not in replica.env
    binds = [r.env["GUNICORN_BIND"] for r in plan.replicas]
    assert binds == ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
    assert plan.lb.env["LB_BACKENDS"] == ",".join(f"http://{b}" for b in binds)
    assert plan.lb.env["LB_LISTEN"] == "127.0.0.1:8080"
    assert plan.lb.env["LB_ADMIN_LISTEN"] == "127.0.0.1:9100"
    assert "REDIS_URL" not in plan.lb.env
    # the lb starts after the replicas and stops before them
    assert plan.services[-1] is plan.lb


def test_environment_urls_are_used_as_given_and_redis_is_shared(tmp_path):
    environ = {
        "DATABASE_URL": "postgresql://u@db:5432/main",
        "SHARD_URLS": "postgresql://u@s1/x, postgresql://u@s2/x",
        "REDIS_URL": "redis://cache:6379/0",
        "DJANGO_SECRET_KEY": "from-env",
        "LB_TRUSTED_PROXIES": "",
    }
    plan = plan_for(tmp_path, environ, replicas=2, port=18080, admin_port=19100)
    assert plan.stores.shard_urls == ("postgresql://u@s1/x", "postgresql://u@s2/x")
    assert plan.replicas[0].env["DATABASE_URL"] == "postgresql://u@db:5432/main"
    assert plan.replicas[0].env["DJANGO_SECRET_KEY"] == "from-env"
    assert plan.replicas[1].env["REDIS_URL"] == plan.lb.env["REDIS_URL"] == "redis://cache:6379/0"
    # an operator who empties LB_TRUSTED_PROXIES gets no trusted proxy
    assert plan.lb.env["LB_TRUSTED_PROXIES"] == ""
    assert "DATABASE_URL, SHARD_URLS, REDIS_URL from the environment" in plan.stores.description


def test_lb_config_from_the_plan_is_valid_for_the_lb(tmp_path):
    from lb.config import load_settings

    plan = plan_for(tmp_path, lb_workers=2, port=18081, admin_port=19101, backend_base_port=18100)
    settings = load_settings(plan.lb.env)
    assert settings.workers == 2
    assert [b.port for b in settings.backends] == [18100, 18101, 18102]
    assert settings.listen.port == 18081 and settings.admin_listen.port == 19101
    # locally, Locust and a dev TLS front on loopback may speak for many clients
    assert [str(n) for n in settings.trusted_proxies] == ["127.0.0.1/32"]


def test_summary_says_where_everything_is(tmp_path):
    text = summary(plan_for(tmp_path), staff="staff / pw")
    for needle in (
        "http://127.0.0.1:8080",
        "http://127.0.0.1:9100/status",
        "http://127.0.0.1:9100/metrics",
        "http://127.0.0.1:8080/api/docs/",
        "http://127.0.0.1:8080/admin/",
        "staff / pw",
        "Ctrl-C",
    ):
        assert needle in text


def test_port_clash_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=rf"127.0.0.1:{port} \(lb public listener\)"):
            check_ports("127.0.0.1", ((port, "lb public listener"),))
    check_ports("127.0.0.1", ((port, "lb public listener"),))  # free again


def test_bad_options_exit_2():
    with pytest.raises(SystemExit) as exc:
        parse_args(["--replicas", "0"])
    assert exc.value.code == 2


def test_secret_and_password_files_are_private_and_stable(tmp_path):
    first = private_file(tmp_path / "secret_key", "one")
    again = private_file(tmp_path / "secret_key", "two")
    assert first == again == "one"
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_staff_username_from_seed_output():
    assert staff_username("tours: 3 created\nstaff user: admin password: user\n") == "admin"
    assert staff_username("nothing useful") == "staff"


def test_backoff_doubles_and_is_capped():
    assert [backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.processes
def test_a_dying_child_is_reported_loudly_and_restarted(tmp_path):
    said: list[str] = []
    supervisor = Supervisor(tmp_path / "log", said.append)
    service = Service(
        name="backend-1",
        argv=(sys.executable, "-c", "print('boom', flush=True); raise SystemExit(3)"),
        env={"PATH": "/usr/bin:/bin"},
        port=0,
        ready_url="http://127.0.0.1:1/",
    )
    child = supervisor.start(service)
    first_pid = child.pid
    child.popen.wait(10)
    now = time.monotonic()
    supervisor.check(now)
    assert "backend-1" in said[-1] and "DIED with exit code 3" in said[-1] and "boom" in said[-1]
    supervisor.check(now + 0.5)  # still inside the backoff: not yet
    assert child.pid == first_pid
    supervisor.check(now + 1.0)
    assert child.pid != first_pid and "restarted backend-1" in said[-1]
    supervisor.stop()
    assert child.popen.poll() is not None


@pytest.mark.processes
def test_stop_terminates_only_its_own_children_newest_first(tmp_path):
    supervisor = Supervisor(tmp_path / "log", lambda _: None)
    sleeper = (sys.executable, "-c", "import time; time.sleep(60)")
    children = [
        supervisor.start(Service(f"s{i}", sleeper, {"PATH": "/usr/bin:/bin"}, 0, ""))
        for i in range(2)
    ]
    bystander = subprocess.Popen(sleeper)
    try:
        supervisor.stop(deadline=5)
        assert all(c.popen.poll() is not None for c in children)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def ops_up(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "ops", "up", "--var", str(tmp_path / "var"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.processes
def test_ops_up_refuses_a_busy_port_in_one_line_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ops_up(tmp_path, "--port", str(port), "--admin-port", str(free_port()))
    assert result.returncode == 1
    assert f"port already in use: 127.0.0.1:{port} (lb public listener (--port))" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "log" / "migrate_all.log").exists()


@pytest.mark.processes
def test_ops_up_without_postgres_binaries_says_so(tmp_path):
    result = ops_up(
        tmp_path,
        "--postgres",
        "--port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
        "--backend-base-port",
        str(free_port()),
        "--replicas",
        "1",
        env={"PG_BINDIR": str(tmp_path / "no-postgres-here"), "DATABASE_URL": ""},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ops up: could not start a data server" in result.stderr
    assert "Traceback" not in result.stderr
    assert "ops: stopped" in result.stdout
