"""Shared buckets in Redis: one key per (rule, client), one Lua script, micro-batched.

Every check queued during one event-loop iteration goes to Redis in one pipelined round
trip of EVALSHA calls, so the cost per request is a share of a round trip, not a whole
one, and the limit stays exact: each EVALSHA is still one atomic script on one key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from lb.admission.bucket import Decision, decide
from lb.admission.rules import Rule
from lb.config import Settings

log = logging.getLogger("lb.admission")

SCRIPT = resources.files("lb.admission").joinpath("leaky_bucket.lua").read_text()
KEY_PREFIX = "lb:rl:"


class StoreUnavailable(Exception):
    """Redis could not answer a check in time (down, unreachable, slow, or confused)."""


def bucket_key(rule_name: str, client: str) -> str:
    """The one Redis key of a bucket: the whole identity is the hash tag.

    The tag keeps a bucket in one cluster slot by construction, and spreads different
    clients (and rules) over all slots; braces are dropped so nothing can end the tag early.
    """
    tag = f"{rule_name}|{client}".replace("{", "").replace("}", "")
    return f"{KEY_PREFIX}{{{tag}}}"


def redact(url: str) -> str:
    """The Redis URL without its password, for /status and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class _Pending:
    __slots__ = ("args", "future", "rule")

    def __init__(self, rule: Rule, args: tuple[str, str, str], future: asyncio.Future[Decision]):
        self.rule, self.args, self.future = rule, args, future


class RedisLimiter:
    """Leaky buckets in Redis (a single server or a cluster), shared by every lb process."""

    mode = "redis"

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        timeout: float,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._on_error = on_error
        self._sha = ""
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        # capacity and rate as the script's arguments, formatted once per rule
        self._args: dict[str, tuple[str, str]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_error: Callable[[], None] = lambda: None
    ) -> RedisLimiter:
        assert settings.redis_url is not None
        options: dict[str, Any] = {
            "socket_timeout": max(settings.redis_timeout, 0.5),
            "socket_connect_timeout": max(settings.redis_timeout, 0.5),
            "retry": Retry(NoBackoff(), 0),
        }
        client: Redis | RedisCluster
        if settings.redis_cluster:
            client = RedisCluster.from_url(settings.redis_url, **options)
        else:
            client = Redis.from_url(settings.redis_url, **options)
        return cls(client, timeout=settings.redis_timeout, on_error=on_error)

    async def start(self) -> None:
        """Load the script (and with it, prove Redis answers); StoreUnavailable if not."""
        await self.ping()

    async def ping(self) -> None:
        """Reach Redis and (re)load the script: a restarted Redis has forgotten it."""
        try:
            async with asyncio.timeout(max(self._timeout * 10, 2.0)):
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()
                self._sha = await self._client.script_load(SCRIPT)
        except Exception as exc:  # any failure to reach Redis means: not available
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self._fail(self._queue, StoreUnavailable("closed"))
        self._queue = []
        await self._client.aclose()

    async def check(self, rule: Rule, client: str) -> Decision:
        args = self._args.get(rule.name)
        if args is None:
            args = self._args[rule.name] = (str(rule.capacity), repr(rule.rate))
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(rule, (bucket_key(rule.name, client), *args), future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # runs one loop iteration after the first check: everything queued by then
        # (and everything queued while a batch is in flight) goes in the next pipeline
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._flusher = None

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._run(batch)
        except asyncio.CancelledError:
            self._fail(batch, StoreUnavailable("cancelled"))
            raise
        except Exception as exc:
            # whatever went wrong, no request may hang on it: the batch fails over as a whole
            self._on_error()
            self._fail(batch, StoreUnavailable(f"{type(exc).__name__}: {exc}"))
            return
        for item, reply in zip(batch, replies, strict=True):
            if item.future.done():
                continue  # the request went away meanwhile
            if isinstance(reply, Exception):
                item.future.set_exception(StoreUnavailable(str(reply)))
                continue
            allowed, level = reply
            rule = item.rule
            item.future.set_result(decide(allowed == 1, float(level), rule.capacity, rule.rate))

    async def _run(self, batch: list[_Pending]) -> list[Any]:
        replies = await self._pipeline(batch)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing or not self._sha:
            # Redis restarted or failed over and lost its script cache: load it, redo those
            self._sha = await self._client.script_load(SCRIPT)
            if not missing:
                missing = list(range(len(batch)))
            again = await self._pipeline([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, batch: list[_Pending]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        sha = self._sha or "0" * 40
        for item in batch:
            # execute_command: cluster pipelines refuse the evalsha() helper, not the command
            pipe.execute_command("EVALSHA", sha, 1, *item.args)
        result: list[Any] = await pipe.execute(raise_on_error=False)
        return result

    @staticmethod
    def _fail(batch: list[_Pending], exc: StoreUnavailable) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)
