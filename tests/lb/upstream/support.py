"""Helpers for the pure upstream tests: a fake clock and settings with overrides."""

from __future__ import annotations

from lb.config import Settings, load_settings


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(n: int = 3, **env: str) -> Settings:
    backends = ",".join(f"http://127.0.0.1:{9001 + i}" for i in range(n))
    return load_settings({"LB_BACKENDS": backends, **env})
