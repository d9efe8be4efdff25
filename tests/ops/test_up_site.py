"""`./dev up` (python -m ops up) names the web site first in its summary."""

from __future__ import annotations

from pathlib import Path

from ops.stack import Options, build_plan, sqlite_stores
from ops.up import announce


def test_the_site_address_comes_first_aligned_with_the_rest(tmp_path: Path) -> None:
    options = Options(var=tmp_path / "var", port=18123)
    plan = build_plan(options, {}, sqlite_stores(options.var), secret_key="s3cret-for-tests")
    lines = announce(plan, staff="staff / pw").splitlines()
    rows = [line for line in lines if line.startswith("  ")]
    assert rows[0].split() == ["web", "site", "http://127.0.0.1:18123/"]
    assert rows[1].split()[:2] == ["public", "endpoint"]
    # the values line up in one column
    assert rows[0].index("http://") == rows[1].index("http://")
    assert lines[1] == "tourbook stack is up"
    assert "staff / pw" in "\n".join(lines)
