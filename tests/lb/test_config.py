"""`python -m lb` refuses bad configuration with one line naming variable, value and expectation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

pytestmark = [pytest.mark.processes]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LB_BACKENDS", "nonsense", "http://host:port"),
        ("LB_WORKERS", "0", ">= 1"),
        ("LB_LISTEN", "foo", "host:port"),
        ("LB_CONNECT_TIMEOUT", "-1", "seconds > 0"),
        ("LB_ALGORITHM", "random", "p2c, round_robin"),
    ],
)
def test_bad_value_exits_2_with_one_line(variable: str, value: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env[variable] = value
    done = subprocess.run(
        [sys.executable, "-m", "lb"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and repr(value) in lines[0] and expected in lines[0]


def test_taken_public_port_exits_1_with_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
        env["LB_LISTEN"] = f"127.0.0.1:{port}"
        done = subprocess.run(
            [sys.executable, "-m", "lb"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot start" in lines[0], done.stderr
