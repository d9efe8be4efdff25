"""CI end to end: the `flash` Locust profile (ten times the users within 10 s) through a real
stack, `python -m ops up` on embedded defaults; its thresholds (goodput, admitted p95, 1%
failures, shed answers honoured as expected) must pass, and the audit afterwards too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.locust import run_locust
from tests.system.test_stack_smoke import Stack, audit, running_stack

pytestmark = [pytest.mark.processes, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("flash-stack")) as running:
        yield running


def test_flash_profile_passes_its_thresholds(stack, tmp_path):
    run = run_locust(stack.url, "flash", tmp_path)
    output, rows = run.output, run.rows
    assert run.returncode == 0, output[-6000:]
    assert "PASSED" in output and "goodput req/s" in output
    paid = run.count("bookings: pay")
    assert paid >= 1, sorted(rows)
    # no 5xx other than the lb's honest "overloaded" (recorded as an expected outcome)
    assert not [
        name for name, row in rows.items() if int(row.get("Failure Count", 0)) and "503" in name
    ]
    # the lb stayed in one piece: every replica still in rotation, none ejected
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{stack.admin}/status", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status = json.loads(response.read())
    assert all(b["healthy"] and b["ejections"] == 0 for b in status["backends"]), status["backends"]


def test_invariants_hold_after_the_flash(stack):
    result = audit(stack.var)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
