"""`python -m ops.bench bookings` runs end to end at a tiny scale and prints its table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ops.bench.bookings import main
from tests.support.processes import ROOT


def test_bad_runs_option_is_refused_before_starting_anything(capsys: pytest.CaptureFixture) -> None:
    assert main(["--runs", "nope"]) == 2
    assert "--runs='nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--bookings", "0"])


@pytest.mark.postgres
@pytest.mark.processes
@pytest.mark.slow
def test_bench_runs_and_audits_each_run() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.bench",
            "bookings",
            "--bookings",
            "80",
            "--spread-tours",
            "8",
            "--concurrency",
            "8",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.split()}
    assert {"hot", "spread", "soldout"} <= set(rows)
    # run tours seats attempts created 409 other seconds req/s booked/s p50 p99 audit
    assert rows["hot"][4] == "80" and rows["hot"][-1] == "OK"
    assert rows["spread"][4] == "80" and rows["spread"][-1] == "OK"
    assert rows["soldout"][2:7] == ["20", "80", "20", "60", "0"]
    assert rows["soldout"][-1] == "OK"
