"""Run the Black-Friday Locust scenario headless against a host, as an operator would."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ROOT


@dataclass
class LocustRun:
    """One headless run: Locust's exit code, its output and its per-name stats rows."""

    returncode: int
    output: str
    rows: dict[str, dict[str, str]]
    html: Path

    def count(self, name: str) -> int:
        """How many requests Locust recorded under `name`."""
        return int(self.rows.get(name, {}).get("Request Count", 0))


def run_locust(host: str, profile: str, out: Path, *extra: str, timeout: float = 150) -> LocustRun:
    """`locust -f loadtest/locustfile.py --headless` with LOADTEST_PROFILE=`profile`, its CSV,
    HTML report and output under `out`; `extra` adds options (e.g. --run-time 8s)."""
    prefix = out / profile
    log_path = out / f"{profile}-locust.log"
    env = {**os.environ, "LOADTEST_PROFILE": profile, "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtest/locustfile.py",
        "--headless",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--html",
        str(out / f"{profile}-report.html"),
        "--only-summary",
        *extra,
    ]
    with open(log_path, "wb") as log:
        result = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        )
    rows: dict[str, dict[str, str]] = {}
    with contextlib.suppress(FileNotFoundError), open(f"{prefix}_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    return LocustRun(
        result.returncode,
        log_path.read_text(errors="replace"),
        rows,
        out / f"{profile}-report.html",
    )
