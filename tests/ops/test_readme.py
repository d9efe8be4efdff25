"""The README's configuration tables name every environment variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from loadtest.profiles import PROFILE_VARIABLE
from tests.ops.test_compose import env_names_read

ROOT = Path(__file__).resolve().parents[2]
# set by the entry points themselves, not configuration
NOT_CONFIGURATION = {"DJANGO_SETTINGS_MODULE"}


def test_every_variable_the_code_reads_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", readme))
    read = env_names_read(
        ROOT / "lb",
        ROOT / "backend",
        ROOT / "ops" / "deploy" / "discover.py",
        ROOT / "ops" / "deploy" / "nginx" / "make-cert.sh",
        ROOT / "ops" / "servers.py",
    ) | {PROFILE_VARIABLE}
    assert len(read) > 60  # the scan found the settings modules
    missing = sorted(read - documented - NOT_CONFIGURATION)
    assert missing == [], f"README lacks: {missing}"


def test_readme_quick_start_is_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "./dev up" in readme and "./dev test" in readme
    for doc in ("load-balancer", "resilience", "admission", "backend", "bookings"):
        assert f"(docs/{doc}.md)" in readme
