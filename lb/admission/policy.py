"""The admission policy in force: default bucket, rules, dry-run flag, and who set it (pure).

The environment gives the boot policy (version 0). An SRE replaces it at run time through the
admin listener; every change gets the next version number, so a process applies a policy only
when it is newer than the one it has, whichever way (pub/sub, poll, file) it arrived.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lb.admission.rules import Rule, RuleError, RuleSet, default_rule, format_rules, parse_rules

FIELDS = ("bucket_capacity", "leak_rate", "rules", "dry_run")


class PolicyError(ValueError):
    """A bad field of a policy update: `field` names it, the message says what is expected."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class Policy:
    """One complete admission policy. Immutable: a change is a new Policy with a new version."""

    bucket_capacity: int
    leak_rate: float
    rules: tuple[Rule, ...]
    dry_run: bool = False
    version: int = 0
    set_by: str = "environment"
    set_at: float | None = None  # unix time of the change; None for the boot policy

    @property
    def default(self) -> Rule:
        return default_rule(self.bucket_capacity, self.leak_rate)

    def rule_set(self) -> RuleSet:
        return RuleSet(self.default, self.rules)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "bucket_capacity": self.bucket_capacity,
            "leak_rate": self.leak_rate,
            "rules": format_rules(self.rules),
            "dry_run": self.dry_run,
            "set_by": self.set_by,
            "set_at": self.set_at,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Policy:
        """A stored policy (as `to_json` wrote it); PolicyError when it does not validate."""
        policy = updated(
            Policy(1, 1.0, ()), {k: doc[k] for k in FIELDS if k in doc}, require_all=True
        )
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise PolicyError("version", "expected a whole number >= 0")
        set_at = doc.get("set_at")
        return replace(
            policy,
            version=version,
            set_by=str(doc.get("set_by") or "unknown"),
            set_at=float(set_at) if isinstance(set_at, int | float) else None,
        )

    def describe(self) -> str:
        """One line for the audit log."""
        return (
            f"BUCKET_CAPACITY={self.bucket_capacity} LEAK_RATE={self.leak_rate:g} "
            f"LB_RATE_RULES={format_rules(self.rules)!r} LB_RATE_DRY_RUN={int(self.dry_run)}"
        )


def updated(base: Policy, body: Mapping[str, Any], *, require_all: bool = False) -> Policy:
    """`base` with the fields of `body` replaced, validated as the environment is.

    Fields left out keep their value in `base`; an unknown field, a missing one (with
    `require_all`) or a bad value raises PolicyError naming it. Values may be JSON numbers
    and booleans, or the strings the environment would hold ("40", "0.5", "1").
    """
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise PolicyError(unknown[0], f"unknown field; expected some of {', '.join(FIELDS)}")
    if require_all:
        missing = [name for name in FIELDS if name not in body]
        if missing:
            raise PolicyError(missing[0], "missing")
    changes: dict[str, Any] = {}
    if "bucket_capacity" in body:
        changes["bucket_capacity"] = _capacity(body["bucket_capacity"])
    if "leak_rate" in body:
        changes["leak_rate"] = _rate(body["leak_rate"])
    if "rules" in body:
        text = body["rules"]
        if not isinstance(text, str):
            raise PolicyError(
                "rules", "expected a string of METHOD PATH_PREFIX=CAPACITY/RATE rules"
            )
        try:
            changes["rules"] = parse_rules(text)
        except RuleError as exc:
            raise PolicyError("rules", str(exc)) from None
    if "dry_run" in body:
        changes["dry_run"] = _flag(body["dry_run"])
    return replace(base, **changes)


def _capacity(value: Any) -> int:
    expected = "a whole number >= 1 (requests)"
    if isinstance(value, bool):
        raise PolicyError("bucket_capacity", expected)
    try:
        number = int(value) if isinstance(value, int | str) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise PolicyError("bucket_capacity", expected)
    return number


def _rate(value: Any) -> float:
    expected = "requests per second, a number > 0"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PolicyError("leak_rate", expected)
    try:
        number = float(value)
    except ValueError:
        raise PolicyError("leak_rate", expected) from None
    if not (number > 0 and math.isfinite(number)):
        raise PolicyError("leak_rate", expected)
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise PolicyError("dry_run", "expected true or false")
