"""What admission needs from the lb's settings, as one small value (built in lb/config.py)."""

from __future__ import annotations

from dataclasses import dataclass

from lb.admission.policy import Policy
from lb.admission.rules import Rule


@dataclass(frozen=True, slots=True)
class AdmissionOptions:
    """The boot policy and where bucket state lives; admission never reads Settings itself."""

    bucket_capacity: int = 20
    leak_rate: float = 10.0
    rules: tuple[Rule, ...] = ()
    dry_run: bool = False
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_failure: str = "local"
    redis_timeout: float = 0.05

    def boot_policy(self) -> Policy:
        """The policy of the environment: version 0, in force until an SRE changes it."""
        return Policy(self.bucket_capacity, self.leak_rate, self.rules, self.dry_run)
