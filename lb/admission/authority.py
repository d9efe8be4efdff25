"""Where the admin listener's policy changes go: Redis for the fleet, else this lb's processes.

With Redis the change is stored there under the next version and announced to every lb
process on every host (distribution.py). Without Redis it is numbered here and handed to
`deliver`: a single-process lb applies it directly, the lb master writes it where its
workers pick it up. Either way the change is one audit line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from lb.admission.distribution import (
    Holder,
    PolicySync,
    RedisPolicyStore,
    document,
    reset_document,
    resolve,
)
from lb.admission.policy import Policy

audit = logging.getLogger("lb.audit")

Deliver = Callable[[Policy], Awaitable[None]]


async def _nothing(policy: Policy) -> None:
    return None


class PolicyAuthority:
    """Numbers, stores and hands out policy changes; `holder` holds the policy in force."""

    def __init__(
        self,
        holder: Holder,
        boot: Policy,
        *,
        store: RedisPolicyStore | None = None,
        deliver: Deliver = _nothing,
    ) -> None:
        self.holder = holder
        self.boot = boot
        self.store = store
        self.deliver = deliver
        self.sync = PolicySync(holder, store, boot) if store is not None else None

    @property
    def policy(self) -> Policy:
        return self.holder.policy

    @property
    def scope(self) -> str:
        """Who a change reaches: every lb on the Redis, or this lb's processes only."""
        return "fleet" if self.store is not None else "this lb"

    async def start(self) -> None:
        if self.sync is not None:
            await self.sync.start()

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.close()

    async def set(self, policy: Policy, *, by: str) -> Policy:
        """Put `policy` (its version is ignored) in force; PolicyUnavailable without Redis."""
        before = self.holder.policy
        stamped = replace(policy, set_by=by, set_at=time.time())
        if self.store is not None:
            version = await self.store.publish(document(stamped))
            stamped = replace(stamped, version=version)
        else:
            stamped = replace(stamped, version=before.version + 1)
        self.holder.apply(stamped)
        await self.deliver(stamped)
        self._audit("set", before, stamped)
        return stamped

    async def reset(self, *, by: str) -> Policy:
        """Put each process's environment policy back in force, under a new version."""
        before = self.holder.policy
        doc = reset_document(by)
        if self.store is not None:
            doc["version"] = await self.store.publish(doc)
        else:
            doc["version"] = before.version + 1
        policy = resolve(doc, self.boot)
        self.holder.apply(policy)
        await self.deliver(policy)
        self._audit("reset", before, policy)
        return policy

    def _audit(self, action: str, before: Policy, after: Policy) -> None:
        audit.warning(
            "audit: admission policy %s by %s: v%d -> v%d (%s): %s",
            action,
            after.set_by,
            before.version,
            after.version,
            self.scope,
            after.describe(),
        )
