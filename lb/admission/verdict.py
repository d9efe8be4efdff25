"""What admission tells the proxy: admit or reject, and the headers for the response (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lb.admission.bucket import Decision
from lb.admission.rules import Rule

RATELIMIT_POLICY: Final = "RateLimit-Policy"
RATELIMIT: Final = "RateLimit"
RETRY_AFTER: Final = "Retry-After"

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Admit or reject one request.

    `headers` go on every response (RateLimit-Policy, RateLimit, plus Retry-After when
    rejected). When not allowed, `status`, `code` and `detail` describe the lb's own
    JSON error response.
    """

    allowed: bool
    headers: Headers
    status: int = 200
    code: str = ""
    detail: str = ""


class VerdictCache:
    """Builds verdicts for one rule; they are immutable, so each distinct one is built once.

    The key space is small (remaining <= capacity, reset and retry-after in whole
    seconds), and the cache is bounded anyway so a huge capacity cannot grow it.
    """

    LIMIT = 4096

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self._policy = (RATELIMIT_POLICY, rule.policy)
        self._quoted = f'"{rule.name}"'
        self._cache: dict[tuple[bool, int, int, int], Verdict] = {}
        self.unknown = Verdict(allowed=True, headers=(self._policy,))

    def verdict(self, decision: Decision, *, enforce: bool = True) -> Verdict:
        """The verdict for `decision`; `enforce=False` (dry run) admits what would be rejected."""
        allowed = decision.allowed or not enforce
        retry = 0 if allowed else decision.retry_after
        key = (allowed, decision.remaining, decision.reset, retry)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._build(allowed, decision.remaining, decision.reset, retry)
            if len(self._cache) >= self.LIMIT:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict

    def _build(self, allowed: bool, remaining: int, reset: int, retry: int) -> Verdict:
        headers = (self._policy, (RATELIMIT, f"{self._quoted};r={remaining};t={reset}"))
        if allowed:
            return Verdict(allowed=True, headers=headers)
        seconds = "second" if retry == 1 else "seconds"
        return Verdict(
            allowed=False,
            headers=(*headers, (RETRY_AFTER, str(retry))),
            status=429,
            code="rate_limited",
            detail=f"Too many requests ({self.rule.name} allows {self.rule.capacity} at once, "
            f"{self.rule.rate:g} per second); retry in {retry} {seconds}.",
        )


def unavailable(rule: Rule, retry_after: int) -> Verdict:
    """The closed-mode answer while the shared bucket store cannot be reached."""
    return Verdict(
        allowed=False,
        headers=((RATELIMIT_POLICY, rule.policy), (RETRY_AFTER, str(max(1, retry_after)))),
        status=503,
        code="admission_unavailable",
        detail="Admission control cannot reach its bucket store; retry shortly.",
    )
