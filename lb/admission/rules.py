"""Rate rules: parsing `LB_RATE_RULES` and choosing the rule for a request (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "*"}
)
# sign-ups: a burst of 2, then one a second; logins (password guessing): a burst of 5, then
# one every 2 s per client, generous for a person retyping a password, slow for a guesser
# sign-ups and logins are slow on purpose (password hashing); the web site's static files
# (CSS, JS, a page's few images) have their own roomy bucket, so a browser loading pages
# does not spend the client's default bucket on them
DEFAULT_RULES = "POST /api/auth/register/=2/1; POST /api/auth/token/=5/0.5; GET /static/=200/100"
DEFAULT_NAME = "default"


@dataclass(frozen=True, slots=True)
class Rule:
    """One leaky bucket shape: `capacity` requests, draining at `rate` per second."""

    name: str
    capacity: int
    rate: float
    method: str = "*"
    prefix: str = "/"
    # draft-11 RateLimit-Policy value, computed once: "<name>";q=<capacity>;w=<window>
    policy: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        window = max(1, math.ceil(self.capacity / self.rate))
        object.__setattr__(self, "policy", f'"{self.name}";q={self.capacity};w={window}')

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method == method) and path.startswith(self.prefix)


def default_rule(capacity: int, rate: float) -> Rule:
    """The bucket every request falls into unless a more specific rule matches."""
    return Rule(name=DEFAULT_NAME, capacity=capacity, rate=rate)


def format_rules(rules: tuple[Rule, ...]) -> str:
    """Rules back in the LB_RATE_RULES grammar (parse_rules(format_rules(r)) == r)."""
    return "; ".join(f"{r.method} {r.prefix}={r.capacity}/{format_rate(r.rate)}" for r in rules)


def format_rate(rate: float) -> str:
    """A rate as short as it can be written without losing precision: 1, 0.5, 0.1234567891."""
    short = f"{rate:g}"
    return short if float(short) == rate else repr(rate)


class RuleError(ValueError):
    """A rule that cannot be parsed; the message says what is expected."""


def parse_rule(text: str) -> Rule:
    """Parse `METHOD PATH_PREFIX=CAPACITY/RATE`, e.g. `POST /api/auth/register/=2/1`."""
    expected = "METHOD PATH_PREFIX=CAPACITY/RATE, e.g. 'POST /api/auth/register/=2/1'"
    head, sep, shape = text.strip().rpartition("=")
    parts = head.split()
    if not sep or len(parts) != 2:
        raise RuleError(f"rule {text.strip()!r}: expected {expected}")
    method, prefix = parts[0].upper(), parts[1]
    if method not in HTTP_METHODS:
        raise RuleError(f"rule {text.strip()!r}: unknown method {parts[0]!r}")
    if not prefix.startswith("/"):
        raise RuleError(f"rule {text.strip()!r}: the path prefix must start with '/'")
    if any(c in '"\\' or not c.isprintable() for c in prefix):
        # the rule name goes into the RateLimit headers as a quoted string
        raise RuleError(f"rule {text.strip()!r}: the path prefix may not contain quotes")
    cap_text, slash, rate_text = shape.partition("/")
    try:
        capacity, rate = int(cap_text), float(rate_text)
    except ValueError:
        raise RuleError(f"rule {text.strip()!r}: expected {expected}") from None
    if not slash or capacity < 1 or not (rate > 0 and math.isfinite(rate)):
        raise RuleError(f"rule {text.strip()!r}: capacity must be >= 1 and rate > 0")
    return Rule(
        name=f"{method} {prefix}", capacity=capacity, rate=rate, method=method, prefix=prefix
    )


def parse_rules(text: str) -> tuple[Rule, ...]:
    """Parse `;`-separated rules; empty text gives no rules. Duplicates are an error."""
    rules = tuple(parse_rule(part) for part in text.split(";") if part.strip())
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise RuleError("the same METHOD PATH_PREFIX appears twice")
    return rules


class RuleSet:
    """The default rule plus the extra rules; the longest matching prefix wins."""

    def __init__(self, default: Rule, rules: tuple[Rule, ...] = ()) -> None:
        self.default = default
        # longest prefix first; for equal prefixes a method-specific rule beats `*`
        self.rules = tuple(
            sorted(rules, key=lambda r: (len(r.prefix), r.method != "*"), reverse=True)
        )

    @property
    def all(self) -> tuple[Rule, ...]:
        return (self.default, *self.rules)

    def match(self, method: str, path: str) -> Rule:
        for rule in self.rules:
            if rule.matches(method, path):
                return rule
        return self.default
