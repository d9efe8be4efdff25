"""Load profiles: how many users the Black-Friday shape reaches, and how fast (LOADTEST_PROFILE:
smoke, peak, peak150, flash, overload)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

PROFILE_VARIABLE = "LOADTEST_PROFILE"
DEFAULT_PROFILE = "peak"


class ProfileError(ValueError):
    """LOADTEST_PROFILE names no known profile."""


@dataclass(frozen=True, slots=True)
class Profile:
    """One scale of the Black-Friday day: user counts per phase and phase lengths in seconds.

    The phases run in order: baseline (ordinary browsing), build-up (the sale is announced),
    spike (the sale opens: users jump to `peak_users` within `spike_seconds` <= 60),
    hold (the peak lasts), decay (the crowd leaves).
    """

    name: str
    baseline_users: int
    buildup_users: int
    peak_users: int
    baseline_seconds: float
    buildup_seconds: float
    spike_seconds: float
    hold_seconds: float
    decay_seconds: float
    hot_tours: int
    # users wait this long between tasks (seconds, uniform)
    think_min: float
    think_max: float

    def __post_init__(self) -> None:
        if not 0 < self.baseline_users <= self.buildup_users <= self.peak_users:
            raise ProfileError(f"{self.name}: users must grow baseline <= build-up <= peak")
        if not 0 < self.spike_seconds <= 60:
            raise ProfileError(f"{self.name}: the spike must reach peak within 60 s")
        if self.hot_tours < 1 or not 0 <= self.think_min <= self.think_max:
            raise ProfileError(f"{self.name}: hot_tours >= 1 and 0 <= think_min <= think_max")

    @property
    def duration(self) -> float:
        return (
            self.baseline_seconds
            + self.buildup_seconds
            + self.spike_seconds
            + self.hold_seconds
            + self.decay_seconds
        )

    def scaled(self, name: str, factor: float) -> Profile:
        """The same day with every user count multiplied by `factor` (durations unchanged)."""
        return replace(
            self,
            name=name,
            baseline_users=max(1, round(self.baseline_users * factor)),
            buildup_users=max(1, round(self.buildup_users * factor)),
            peak_users=max(1, round(self.peak_users * factor)),
        )


# Sized for the 2-core development machine with Locust on the same host: the smoke run
# fits a CI job; peak saturates the stack's admission limits without starving Locust itself.
SMOKE = Profile(
    name="smoke",
    baseline_users=4,
    buildup_users=10,
    peak_users=24,
    baseline_seconds=5,
    buildup_seconds=6,
    spike_seconds=8,
    hold_seconds=12,
    decay_seconds=5,
    hot_tours=3,
    think_min=0.5,
    think_max=1.5,
)

PEAK = Profile(
    name="peak",
    baseline_users=20,
    buildup_users=60,
    peak_users=200,
    baseline_seconds=30,
    buildup_seconds=60,
    spike_seconds=45,
    hold_seconds=120,
    decay_seconds=45,
    hot_tours=3,
    think_min=1.0,
    think_max=3.0,
)

# The sale opens: ten times the users within 10 s, with short think times, so the stack is
# pushed past its capacity and the lb must shed. Small enough to run in CI next to the stack.
FLASH = Profile(
    name="flash",
    baseline_users=6,
    buildup_users=6,
    peak_users=60,
    baseline_seconds=8,
    buildup_seconds=1,
    spike_seconds=10,
    hold_seconds=16,
    decay_seconds=4,
    hot_tours=3,
    think_min=0.05,
    think_max=0.3,
)

# A sustained overload: enough users with almost no think time to offer several times what
# the local stack can serve (its capacity is a few hundred requests per second). On a 2-core
# machine Locust itself may become the limit: read the offered rate in its report.
OVERLOAD = Profile(
    name="overload",
    baseline_users=50,
    buildup_users=100,
    peak_users=400,
    baseline_seconds=10,
    buildup_seconds=10,
    spike_seconds=10,
    hold_seconds=60,
    decay_seconds=10,
    hot_tours=3,
    think_min=0.0,
    think_max=0.1,
)

PROFILES: dict[str, Profile] = {
    "smoke": SMOKE,
    "peak": PEAK,
    "peak150": PEAK.scaled("peak150", 1.5),
    "flash": FLASH,
    "overload": OVERLOAD,
}


def load_profile(environ: Mapping[str, str]) -> Profile:
    """The profile named by LOADTEST_PROFILE (default peak); ProfileError on an unknown name."""
    name = environ.get(PROFILE_VARIABLE, "").strip() or DEFAULT_PROFILE
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(
            f"{PROFILE_VARIABLE}={name!r}: expected one of {', '.join(PROFILES)}"
        ) from None
