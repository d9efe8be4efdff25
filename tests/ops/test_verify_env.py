"""`python -m loadtest.verify` with no environment audits the stack `ops up` last started (its
var/stack.env), says in one line what it needs otherwise, and never creates a file."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ops.stack import Options, build_plan, sqlite_stores, stack_env_file
from tests.support.processes import ROOT

pytestmark = [pytest.mark.processes]

DATABASE_VARIABLES = ("DATABASE_URL", "SHARD_URLS", "BACKEND_VAR_DIR", "DJANGO_SETTINGS_MODULE")


def bare_env(**extra: str) -> dict[str, str]:
    """This environment without anything that names a database."""
    env = {k: v for k, v in os.environ.items() if k not in DATABASE_VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.verify", *args],
        cwd=cwd,
        env=env or bare_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out as `ops up --var var` leaves it on SQLite: var/db/*.sqlite3 migrated
    by the backend, and var/stack.env written by the same function ops up uses."""
    home = tmp_path_factory.mktemp("stackhome")
    var = home / "var"
    (var / "db").mkdir(parents=True)
    plan = build_plan(Options(var=var), {}, sqlite_stores(var), secrets.token_urlsafe(32))
    (var / "stack.env").write_text(stack_env_file(plan))
    env = bare_env(
        DATABASE_URL=plan.stores.database_url,
        SHARD_URLS=",".join(plan.stores.shard_urls),
        BACKEND_VAR_DIR=str(var),
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(32),
    )
    done = subprocess.run(
        [sys.executable, "-m", "backend", "migrate_all", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return home


def test_no_environment_audits_the_stack_in_var_stack_env(stack_dir: Path) -> None:
    before = files(stack_dir)
    done = run(stack_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: all invariants hold" in done.stdout and "shards: 2" in done.stdout
    assert files(stack_dir) == before  # read-only: not even a -wal or -shm file


def test_a_live_stack_is_read_through_its_write_ahead_log(stack_dir: Path) -> None:
    # a replica of a running stack holds the file open in WAL mode with unmerged commits
    shard = stack_dir / "var" / "db" / "shard0.sqlite3"
    writer = sqlite3.connect(shard)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(
            "INSERT INTO tours_tour (id, name, description, price, start_date, end_date, "
            "capacity, seats_available, rating, rating_count, created_at, updated_at) VALUES "
            "('0c0ffee0000000000000000000000000', 'live', '', 10, '2030-01-01', '2030-01-02', "
            "5, 4, 0, 0, '2026-01-01', '2026-01-01')"
        )
        writer.commit()
        assert Path(f"{shard}-wal").stat().st_size > 0
        before = files(stack_dir)
        done = run(stack_dir)
        # the row committed to the log is seen: 4 seats left of 5 and no booking is a violation
        assert done.returncode == 1, done.stdout + done.stderr
        assert "VIOLATION [seats] on shard_0" in done.stdout
        assert files(stack_dir) == before
    finally:
        writer.execute("DELETE FROM tours_tour WHERE name = 'live'")
        writer.commit()
        writer.close()
    assert run(stack_dir).returncode == 0


def test_a_missing_database_file_is_refused_never_created(stack_dir: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "stack.env"
    ghost = tmp_path / "gone" / "shard9.sqlite3"
    (tmp_path / "gone").mkdir()
    text = (stack_dir / "var" / "stack.env").read_text()
    lines = [
        f"SHARD_URLS=sqlite:///{ghost}" if line.startswith("SHARD_URLS=") else line
        for line in text.splitlines()
    ]
    env_file.write_text("\n".join(lines) + "\n")
    done = run(tmp_path, "--stack-env", str(env_file))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(ghost) in done.stderr and "does not exist" in done.stderr
    assert not ghost.exists() and list((tmp_path / "gone").iterdir()) == []


def test_nothing_configured_says_what_it_needs_in_one_line(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "DATABASE_URL" in line and "python -m ops up" in line and "stack.env" in line
    assert list(tmp_path.iterdir()) == []


def test_the_environment_wins_over_the_stack_file(stack_dir: Path, tmp_path: Path) -> None:
    # the old bug: var/shard0.sqlite3 (not the stack's var/db/) was created empty, exit 2
    var = tmp_path / "var"
    var.mkdir()
    done = run(stack_dir, env=bare_env(BACKEND_VAR_DIR=str(var)))
    assert done.returncode == 2
    assert "default.sqlite3 does not exist" in done.stderr
    assert list(var.iterdir()) == []


def test_verify_and_the_settings_share_one_database_map() -> None:
    import loadtest.verify as verify
    from backend.common.env import database_map

    env = {"DATABASE_URL": "postgresql://u@127.0.0.1:1/d", "SHARD_URLS": "postgresql://u@h:2/a"}
    assert verify.database_settings(env) == database_map(env, Path("/unused"))
    source = Path(verify.__file__).read_text()
    assert "dj_database_url" not in source  # no second reading of the URLs
