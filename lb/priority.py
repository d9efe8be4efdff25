"""Request classes for load shedding: parsing `LB_PRIORITY_RULES` and classifying a request (pure).

Same grammar as `LB_RATE_RULES`: `METHOD PATH_PREFIX=CLASS` separated by `;`, the longest
matching prefix wins (for equal prefixes a named method beats `*`). Classes, most important
first: `critical`, `normal`, `low`. A request no rule matches is `normal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lb.admission.rules import HTTP_METHODS, RuleError

CRITICAL: Final = "critical"
NORMAL: Final = "normal"
LOW: Final = "low"
CLASSES: Final = (CRITICAL, NORMAL, LOW)  # index = rank: lower sheds last
RANK: Final = {name: rank for rank, name in enumerate(CLASSES)}

# Checkout is what the sale is for: booking, paying and cancelling are all POSTs under
# /api/bookings/ (a prefix rule cannot single out /api/bookings/{id}/pay/, and it need not:
# a user who holds a booking pays with the same class that let them book). Login and
# registration cost ~300 ms of password hashing each: a login storm is shed first.
DEFAULT_PRIORITY_RULES: Final = "POST /api/bookings/=critical; POST /api/auth/=low; * /=normal"


@dataclass(frozen=True, slots=True)
class PriorityRule:
    method: str
    prefix: str
    klass: str

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method == method) and path.startswith(self.prefix)


def parse_priority_rules(text: str) -> tuple[PriorityRule, ...]:
    """Parse `;`-separated `METHOD PATH_PREFIX=CLASS` rules; RuleError says what is wrong."""
    rules = []
    for part in text.split(";"):
        item = part.strip()
        if not item:
            continue
        head, sep, klass = item.rpartition("=")
        words = head.split()
        if not sep or len(words) != 2:
            raise RuleError(f"rule {item!r}: expected METHOD PATH_PREFIX=CLASS")
        method, prefix, klass = words[0].upper(), words[1], klass.strip().lower()
        if method not in HTTP_METHODS:
            raise RuleError(f"rule {item!r}: unknown method {words[0]!r}")
        if not prefix.startswith("/"):
            raise RuleError(f"rule {item!r}: the path prefix must start with '/'")
        if klass not in RANK:
            raise RuleError(f"rule {item!r}: the class must be one of {', '.join(CLASSES)}")
        rules.append(PriorityRule(method, prefix, klass))
    keys = [(r.method, r.prefix) for r in rules]
    if len(set(keys)) != len(keys):
        raise RuleError("the same METHOD PATH_PREFIX appears twice")
    return tuple(rules)


class Classifier:
    """The class of a request: the longest matching prefix wins, else `normal`."""

    __slots__ = ("_cache", "rules")

    def __init__(self, rules: tuple[PriorityRule, ...]) -> None:
        self.rules = tuple(
            sorted(rules, key=lambda r: (len(r.prefix), r.method != "*"), reverse=True)
        )
        self._cache: dict[tuple[str, str], str] = {}

    def classify(self, method: str, path: str) -> str:
        key = (method, path)
        found = self._cache.get(key)
        if found is not None:
            return found
        klass = NORMAL
        for rule in self.rules:
            if rule.matches(method, path):
                klass = rule.klass
                break
        if len(self._cache) < 4096:  # paths carry ids: a bounded memo for the hot ones
            self._cache[key] = klass
        return klass
