"""The Black-Friday load shape: baseline, build-up, a spike to peak within 60 s, hold, decay."""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadtest.profiles import Profile


@dataclass(frozen=True, slots=True)
class Stage:
    """Until `end` seconds into the run, aim for `users` users, changing at `spawn_rate`/s."""

    name: str
    end: float
    users: int
    spawn_rate: float


def stages(profile: Profile) -> tuple[Stage, ...]:
    """The phases of `profile` as stages; each spawn rate reaches its target within its phase."""

    def rate(users_from: int, users_to: int, seconds: float) -> float:
        # a little faster than linear, so the target is reached inside the phase
        return max(1.0, math.ceil(abs(users_to - users_from) / max(seconds * 0.8, 1.0)))

    p = profile
    t_baseline = p.baseline_seconds
    t_buildup = t_baseline + p.buildup_seconds
    t_spike = t_buildup + p.spike_seconds
    t_hold = t_spike + p.hold_seconds
    t_decay = t_hold + p.decay_seconds
    return (
        Stage("baseline", t_baseline, p.baseline_users, rate(0, p.baseline_users, t_baseline)),
        Stage(
            "build-up",
            t_buildup,
            p.buildup_users,
            rate(p.baseline_users, p.buildup_users, p.buildup_seconds),
        ),
        Stage("spike", t_spike, p.peak_users, rate(p.buildup_users, p.peak_users, p.spike_seconds)),
        Stage("hold", t_hold, p.peak_users, 1.0),
        Stage(
            "decay",
            t_decay,
            p.baseline_users,
            rate(p.peak_users, p.baseline_users, p.decay_seconds),
        ),
    )


def target_at(plan: tuple[Stage, ...], run_time: float) -> Stage | None:
    """The stage in force `run_time` seconds into the run; None once the run is over."""
    for stage in plan:
        if run_time < stage.end:
            return stage
    return None
