"""Helpers for the pure upstream tests: settings with overrides, and the shared fake clock."""

from __future__ import annotations

from lb.config import Settings, load_settings
from tests.support.clock import FakeClock

__all__ = ["FakeClock", "settings"]


def settings(n: int = 3, **env: str) -> Settings:
    backends = ",".join(f"http://127.0.0.1:{9001 + i}" for i in range(n))
    return load_settings({"LB_BACKENDS": backends, **env})
