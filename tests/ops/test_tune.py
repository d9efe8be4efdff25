"""`python -m ops tune` against a running lb, and the admin token `ops up` hands out."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lb.config import load_settings
from ops.stack import Options, build_plan, sqlite_stores, summary
from ops.tune import parse_assignments
from ops.up import private_file
from tests.lb.conftest import start_lb
from tests.support.processes import ROOT

TOKEN = "tune-test-token-0123456789abcdef"


def test_assignments_take_the_environment_names_or_the_api_names() -> None:
    assert parse_assignments(["BUCKET_CAPACITY=40", "leak_rate=20", "LB_RATE_DRY_RUN=1"]) == {
        "bucket_capacity": "40",
        "leak_rate": "20",
        "dry_run": "1",
    }
    assert parse_assignments(["LB_RATE_RULES=POST /a/=2/1; GET /b/=5/1"]) == {
        "rules": "POST /a/=2/1; GET /b/=5/1"
    }
    with pytest.raises(ValueError, match="LB_WORKERS=3"):
        parse_assignments(["LB_WORKERS=3"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignments(["BUCKET_CAPACITY"])


def test_ops_up_gives_the_lb_a_private_token_and_says_where_it_is(tmp_path: Path) -> None:
    token_file = tmp_path / "admin_token"
    token = private_file(token_file, "generated-token-0123456789")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    options = Options(var=tmp_path)
    plan = build_plan(options, {}, sqlite_stores(tmp_path), "s", admin_token=token)
    assert plan.lb.env["LB_ADMIN_TOKEN"] == token
    assert load_settings(plan.lb.env).admin_token == token
    printed = summary(plan, None, admin_token_file=token_file)
    assert re.search(rf"admin token +{re.escape(str(token_file))} \(mode 0600", printed)
    assert token not in summary(plan, None, admin_token_file=token_file)
    # a token in the environment wins, and the file is not needed
    plan = build_plan(options, {"LB_ADMIN_TOKEN": "x" * 20}, sqlite_stores(tmp_path), "s")
    assert plan.lb.env["LB_ADMIN_TOKEN"] == "x" * 20


def tune(var: Path, admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LB_ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "ops", "tune", "--admin", admin, "--var", str(var), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.processes
def test_tune_changes_the_running_lb_with_the_token_from_var(tmp_path: Path) -> None:
    lb = start_lb(
        {"LB_BACKENDS": "http://127.0.0.1:9", "LB_ADMIN_TOKEN": TOKEN}, tmp_path / "lb.log"
    )
    try:
        var = tmp_path / "var"
        shown = tune(var, lb.admin_url)
        assert shown.returncode == 0 and "admission policy v0" in shown.stdout
        assert "BUCKET_CAPACITY=20" in shown.stdout
        # no token file yet: the lb refuses, and ops tune says why
        refused = tune(var, lb.admin_url, "BUCKET_CAPACITY=40")
        assert refused.returncode == 1 and "401" in refused.stderr
        private_file(var / "admin_token", TOKEN)
        done = tune(var, lb.admin_url, "BUCKET_CAPACITY=40", "LEAK_RATE=20")
        assert done.returncode == 0, done.stderr
        assert "admission policy v1" in done.stdout and "BUCKET_CAPACITY=40" in done.stdout
        assert lb.status()["admission"]["policy_version"] == 1
        bad = tune(var, lb.admin_url, "LB_RATE_RULES=GET /x")
        assert bad.returncode == 1 and "rules" in bad.stderr
        preview = tune(var, lb.admin_url, "--preview", "BUCKET_CAPACITY=1")
        assert preview.returncode == 0 and "would have been rejected" in preview.stdout
        back = tune(var, lb.admin_url, "--reset")
        assert back.returncode == 0 and "BUCKET_CAPACITY=20" in back.stdout
        assert "v2" in back.stdout
    finally:
        lb.process.stop(timeout=15)
