"""The Redis failure policy in one wrapper: shared buckets while Redis answers, else the policy.

`local` falls back to in-process buckets, `open` admits everything, `closed` rejects with
503. A failed or slow batch (LB_REDIS_TIMEOUT, tens of milliseconds) switches the mode at
once; a background probe brings the shared buckets back as soon as Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from lb.admission.bucket import Decision
from lb.admission.limiter import LocalLimiter
from lb.admission.redis_limiter import RedisLimiter, StoreUnavailable
from lb.admission.rules import Rule

log = logging.getLogger("lb.admission")

POLICIES = ("local", "open", "closed")


class Failover:
    """Routes checks to Redis while it is healthy and applies `policy` while it is not."""

    def __init__(
        self,
        primary: RedisLimiter,
        fallback: LocalLimiter,
        *,
        policy: str = "local",
        on_mode: Callable[[str], None] = lambda mode: None,
        probe_every: float = 0.5,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        self.primary = primary
        self.fallback = fallback
        self.policy = policy
        self._on_mode = on_mode
        self._probe_every = probe_every
        self._healthy = False
        self._probe: asyncio.Task[None] | None = None
        self.mode = policy
        self._closing = False
        primary.on_lost = self._degrade

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self) -> None:
        """Connect to Redis; if it is not there, start degraded and keep trying."""
        try:
            await self.primary.start()
        except StoreUnavailable as exc:
            self._degrade(exc)
        else:
            self._set_mode("redis")
            self._healthy = True
            log.info("admission: shared buckets in Redis")

    async def close(self) -> None:
        self._closing = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.primary.close()
        await self.fallback.close()

    async def check(self, rule: Rule, client: str) -> Decision | None:
        if self._healthy:
            try:
                return await self.primary.check(rule, client)
            except StoreUnavailable as exc:
                self._degrade(exc)
        if self.policy == "local":
            return self.fallback.check_now(rule, client)
        return None

    def _degrade(self, exc: StoreUnavailable) -> None:
        if self._probe is None and not self._closing:
            log.warning(
                "admission: Redis unavailable (%s); LB_REDIS_FAILURE=%s in force",
                exc,
                self.policy,
            )
            self._healthy = False
            self._set_mode(self.policy)
            self._probe = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._probe_every)
                try:
                    await self.primary.ping()
                except StoreUnavailable:
                    continue
                self._healthy = True
                self._set_mode("redis")
                log.warning("admission: Redis is back; shared buckets resume")
                return
        finally:
            self._probe = None

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        self._on_mode(mode)
