"""How a policy change reaches every lb process: stored in Redis, announced by pub/sub.

One key holds the fleet's policy as JSON with its version; a counter key hands out versions;
a channel announces each new policy. Every process subscribes, and also reads the key on a
timer, so a message lost while a process was disconnected is caught within POLL seconds.
Storing and announcing run in one Lua script: versions are stored in the order they are
handed out, whoever writes at the same time. A `{"reset": true}` document puts the
environment's policy of each process back in force (under the new version).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from lb.admission.policy import Policy, PolicyError

log = logging.getLogger("lb.admission.policy")

# one hash tag: both keys live in one cluster slot, so the script may touch both
KEY = "lb:{policy}"
VERSION_KEY = "lb:{policy}:version"
CHANNEL = "lb:policy"
RESET_MARK = "(reset to the environment)"
POLL = 1.0  # seconds between version checks (the safety net under pub/sub)

# store and announce atomically, the version spliced into the document by Redis
PUBLISH = """
local version = redis.call('INCR', KEYS[2])
local doc = ARGV[1] .. version .. ARGV[2]
redis.call('SET', KEYS[1], doc)
redis.call('PUBLISH', ARGV[3], doc)
return version
"""


class PolicyUnavailable(Exception):
    """The shared policy store cannot be reached: a change cannot be made fleet-wide now."""


class Holder(Protocol):
    """Whatever applies policies: an Admission, or the lb master's copy of the policy."""

    policy: Policy

    def apply(self, policy: Policy) -> bool: ...


class PolicyCopy:
    """The lb master's copy of the policy in force (its workers hold the real ones)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def apply(self, policy: Policy) -> bool:
        if policy.version <= self.policy.version:
            return False
        self.policy = policy
        return True


def document(policy: Policy) -> dict[str, Any]:
    """The stored form of a change (its version is handed out when it is stored)."""
    doc = policy.to_json()
    doc.pop("version")
    return doc


def reset_document(by: str) -> dict[str, Any]:
    return {"reset": True, "set_by": by, "set_at": time.time()}


def resolve(doc: Mapping[str, Any], boot: Policy) -> Policy:
    """The policy a stored document means for a process whose environment gives `boot`."""
    if doc.get("reset"):
        version = doc.get("version")
        if not isinstance(version, int):
            raise PolicyError("version", "expected a whole number")
        set_at = doc.get("set_at")
        return replace(
            boot,
            version=version,
            set_by=f"{doc.get('set_by') or 'unknown'} {RESET_MARK}",
            set_at=float(set_at) if isinstance(set_at, int | float) else None,
        )
    return Policy.from_json(doc)


class RedisPolicyStore:
    """The fleet's policy in Redis (a single server, or a cluster through redis-py)."""

    def __init__(self, url: str, *, cluster: bool = False, timeout: float = 2.0) -> None:
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            self._client: Any = RedisCluster.from_url(url, socket_timeout=timeout)
        else:
            import redis.asyncio

            self._client = redis.asyncio.from_url(url, socket_timeout=timeout)
        self._cluster = cluster
        self._timeout = timeout

    async def publish(self, doc: Mapping[str, Any]) -> int:
        """Store `doc` as the fleet's policy under the next version and announce it."""
        body = json.dumps(dict(doc), sort_keys=True)
        head, tail = '{"version": ', ", " + body[1:] if len(body) > 2 else "}"
        try:
            async with asyncio.timeout(self._timeout):
                version = await self._client.eval(PUBLISH, 2, KEY, VERSION_KEY, head, tail, CHANNEL)
        except Exception as exc:
            raise PolicyUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return int(version)

    async def current(self) -> dict[str, Any] | None:
        """The stored policy document, or None when none was ever set."""
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._client.get(KEY)
        except Exception as exc:
            raise PolicyUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if raw is None:
            return None
        doc = json.loads(raw)
        return doc if isinstance(doc, dict) else None

    async def messages(self, on_message: Any) -> None:
        """Call `on_message(doc)` for every announcement until cancelled (raises on loss)."""
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL)
                if message is not None and message.get("type") == "message":
                    with contextlib.suppress(ValueError):
                        on_message(json.loads(message["data"]))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()


class PolicySync:
    """Keeps one holder on the fleet's policy: pub/sub for speed, a poll as the safety net."""

    def __init__(self, holder: Holder, store: RedisPolicyStore, boot: Policy) -> None:
        self.holder = holder
        self.store = store
        self.boot = boot
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, first_within: float = 2.0) -> None:
        """Adopt the stored policy (if Redis answers soon), then follow it in the background."""
        with contextlib.suppress(PolicyUnavailable, TimeoutError):
            async with asyncio.timeout(first_within):
                await self.check()
        self._tasks = [
            asyncio.create_task(self._listen(), name="lb-policy-listen"),
            asyncio.create_task(self._poll(), name="lb-policy-poll"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    async def check(self) -> None:
        """Read the stored policy and apply it if it is newer than the one in force."""
        doc = await self.store.current()
        if doc is not None:
            self.offer(doc)

    def offer(self, doc: Mapping[str, Any]) -> bool:
        try:
            policy = resolve(doc, self.boot)
        except (PolicyError, KeyError, TypeError) as exc:
            log.error("admission: ignoring a stored policy that does not validate: %s", exc)
            return False
        return self.holder.apply(policy)

    async def _listen(self) -> None:
        while True:
            try:
                await self.store.messages(self.offer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("policy channel lost (%s); resubscribing", exc)
                await asyncio.sleep(POLL)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            try:
                await self.check()
            except PolicyUnavailable as exc:
                log.debug("policy check failed: %s", exc)
