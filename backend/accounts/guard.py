"""Credential-stuffing defence: failed logins back off exponentially, per account and per address.

What is limited: password checks, keyed by the account name tried (known or not: an unknown
name is counted exactly like a wrong password, so the answers never tell whether an account
exists) and by the client address (the lb's X-Real-IP; an IPv6 address counts by its /64).
How it is counted (`Backoff`, pure): the first `free_failures` failures in a row cost nothing;
each one after that locks the key for `base * 2**k` seconds, up to `max`. A login attempted
while locked is refused with 429 + Retry-After *before* the password is checked (no CPU spent,
and it does not lengthen the lock). A successful login clears its account's record.
Where the state lives: the Django cache (Redis when REDIS_URL is set, so every replica shares
it), with the clock injected for tests. If the cache fails, logins go on unguarded (logged):
the lb's rule for the login path still meters them, and a Redis outage must not lock everyone
out.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.cache import BaseCache

Clock = Callable[[], float]
T = TypeVar("T")
log = logging.getLogger("backend.accounts.guard")


def _fail_open(default: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return method(*args, **kwargs)
            except Exception as exc:  # the cache's own errors (redis-py, pickling, ...)
                log.warning("login guard unavailable (%s): %s", method.__name__, exc)
                return default  # type: ignore[no-any-return]

        return wrapper

    return decorate


@dataclass(frozen=True)
class Backoff:
    """The lock that follows the `failures`-th failure in a row (pure)."""

    free_failures: int
    base_seconds: float
    max_seconds: float

    def lock_seconds(self, failures: int) -> float:
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return min(self.max_seconds, self.base_seconds * 2.0 ** min(over - 1, 40))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def account_key(username: str) -> str:
    # case-folded: "Alice" and "alice" are one target (registration refuses such twins)
    return "acct:" + _digest(username.casefold())


def address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "addr:" + _digest(address)
    if ip.version == 6:
        return "addr:" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return "addr:" + str(ip)


class LoginGuard:
    """Decides whether a login may check a password, and records how it went."""

    PREFIX = "login-guard:"

    def __init__(
        self,
        cache: BaseCache,
        *,
        account: Backoff,
        address: Backoff,
        window_seconds: int,
        clock: Clock = time.time,
    ) -> None:
        self.cache = cache
        self.policies = {"acct": account, "addr": address}
        self.window = window_seconds
        self.clock = clock

    @_fail_open(0)
    def retry_after(self, username: str | None, address: str) -> int:
        """Whole seconds until a login for this account from this address may be tried; 0: now."""
        keys = self._keys(username, address)
        locks = self.cache.get_many([self._lock(k) for k in keys])
        now = self.clock()
        wait = max((float(until) - now for until in locks.values()), default=0.0)
        return math.ceil(wait) if wait > 0 else 0

    @_fail_open(None)
    def failed(self, username: str | None, address: str) -> None:
        for key in self._keys(username, address):
            failures = self._count(key)
            seconds = self.policies[key[:4]].lock_seconds(failures)
            if seconds > 0:
                until = self.clock() + seconds
                self.cache.set(self._lock(key), until, timeout=math.ceil(seconds) + 1)

    @_fail_open(None)
    def succeeded(self, username: str) -> None:
        key = account_key(username)
        self.cache.delete_many([self._fails(key), self._lock(key)])

    def _keys(self, username: str | None, address: str) -> list[str]:
        keys = [address_key(address)]
        if username is not None:
            keys.append(account_key(username))
        return keys

    def _count(self, key: str) -> int:
        name = self._fails(key)
        self.cache.add(name, 0, timeout=self.window)
        try:
            failures = int(self.cache.incr(name))
        except ValueError:  # expired between add and incr
            self.cache.set(name, 1, timeout=self.window)
            return 1
        self.cache.touch(name, timeout=self.window)  # the window slides with each failure
        return failures

    def _fails(self, key: str) -> str:
        return f"{self.PREFIX}fails:{key}"

    def _lock(self, key: str) -> str:
        return f"{self.PREFIX}lock:{key}"


def guard_from_settings() -> LoginGuard:
    from django.conf import settings
    from django.core.cache import cache

    options: dict[str, Any] = settings.LOGIN_GUARD
    return LoginGuard(
        cache,
        account=Backoff(
            options["ACCOUNT_FREE_FAILURES"], options["BASE_SECONDS"], options["MAX_SECONDS"]
        ),
        address=Backoff(
            options["ADDRESS_FREE_FAILURES"], options["BASE_SECONDS"], options["MAX_SECONDS"]
        ),
        window_seconds=options["WINDOW_SECONDS"],
    )


def client_address(meta: dict[str, Any]) -> str:
    """The client as the lb identified it (X-Real-IP, which it always overwrites), else the peer."""
    real = str(meta.get("HTTP_X_REAL_IP", "")).strip()
    if real:
        try:
            return str(ipaddress.ip_address(real))
        except ValueError:
            pass
    return str(meta.get("REMOTE_ADDR", ""))
