"""Shared buckets in Redis: one key per (rule, client), one Lua script, micro-batched.

Every check queued during one event-loop iteration goes to Redis as one batch, pipelined
on the connection behind the batches still in flight, so the cost per request is a share
of a round trip, no check waits for another batch's reply, and the limit stays exact: the
script checks each bucket atomically on the Redis server's clock, in arrival order.
How the batch travels (one server or a cluster) is redis_transport.py's business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from lb.admission.bucket import Decision, decide
from lb.admission.options import AdmissionOptions
from lb.admission.redis_transport import Cluster, Pending, SingleServer, Transport
from lb.admission.rules import Rule

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


class RedisLimiter:
    """Leaky buckets in Redis (a single server or a cluster), shared by every lb process."""

    mode = "redis"
    # a batch may wait (1 + EXTENSIONS) x LB_REDIS_TIMEOUT while Redis keeps answering
    EXTENSIONS = 4

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        timeout: float = 0.05,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._backend: Transport = (
            Cluster(url, self._lost) if cluster else SingleServer(url, self._lost)
        )
        # told when the connection drops while idle, so the failure policy starts at once
        self.on_lost: Callable[[StoreUnavailable], None] = lambda exc: None
        self._timeout = timeout
        self._on_error = on_error
        self._queue: list[Pending] = []
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._expired: set[asyncio.Task[None]] = set()  # cancelled by _expire, not by close

    @classmethod
    def from_options(
        cls, options: AdmissionOptions, *, on_error: Callable[[], None] = lambda: None
    ) -> RedisLimiter:
        assert options.redis_url is not None
        return cls(
            options.redis_url,
            cluster=options.redis_cluster,
            timeout=options.redis_timeout,
            on_error=on_error,
        )

    def _lost(self) -> None:
        self._on_error()
        self.on_lost(StoreUnavailable("connection to Redis lost"))

    async def start(self) -> None:
        """Connect and load the script (proving Redis answers); StoreUnavailable if not."""
        await self.ping()

    async def ping(self) -> None:
        """Reach Redis and (re)load the script: a restarted Redis has forgotten it."""
        try:
            # not on the request path: connecting may take longer than one check may
            async with asyncio.timeout(max(self._timeout * 10, 2.0)):
                await self._backend.load()
        except Exception as exc:  # any failure to reach Redis means: not available
            self._backend.reset()
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        self._fail(self._queue, StoreUnavailable("closed"))
        self._queue = []
        await self._backend.close()

    async def check(self, rule: Rule, client: str) -> Decision:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        self._queue.append(Pending(rule, bucket_key(rule.name, client), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        # runs once per event-loop iteration that queued checks: they go as one batch,
        # pipelined behind any batch still in flight, so no check waits for another's reply
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[Pending]) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self._timeout, self._expire, task, time.monotonic(), 0)
        try:
            replies = await self._backend.run(batch)
        except asyncio.CancelledError:
            if task not in self._expired:
                self._fail(batch, StoreUnavailable("cancelled"))
                raise
            self._expired.discard(task)
            task.uncancel()
            self._backend.reset()
            self._on_error()
            self._fail(batch, StoreUnavailable(f"no answer within {self._timeout} s"))
            return
        except Exception as exc:
            # whatever went wrong, no request may hang on it: the batch fails over as a whole
            self._backend.reset()
            self._on_error()
            self._fail(batch, StoreUnavailable(f"{type(exc).__name__}: {exc}"))
            return
        finally:
            deadline.cancel()
        for item, reply in zip(batch, replies, strict=True):
            if item.future.done():
                continue  # the request went away meanwhile
            rule = item.rule
            try:
                if isinstance(reply, Exception):
                    raise reply
                allowed, level = reply
                decision = decide(allowed == 1, float(level), rule.capacity, rule.rate)
            except Exception as exc:  # a refused command or a reply of the wrong shape
                item.future.set_exception(StoreUnavailable(f"{type(exc).__name__}: {exc}"))
            else:
                item.future.set_result(decision)

    def _expire(
        self, task: asyncio.Task[None], since: float, extensions: int, hop: int = 0
    ) -> None:
        """The batch's time is up, unless Redis is demonstrably still answering.

        A busy event loop can run this timer before it reads a reply that has already
        arrived (uvloop runs timers before polling sockets). So first let the loop poll
        once (two call_soon hops); then, if Redis sent anything since `since`, it is alive
        and the loop is the slow one: allow another period, at most EXTENSIONS times.
        """
        if task.done():
            return
        loop = asyncio.get_running_loop()
        if hop < 2:
            loop.call_soon(self._expire, task, since, extensions, hop + 1)
        elif self._backend.last_read() > since and extensions < self.EXTENSIONS:
            loop.call_later(self._timeout, self._expire, task, time.monotonic(), extensions + 1)
        else:
            self._expired.add(task)
            task.cancel()

    @staticmethod
    def _fail(batch: list[Pending], exc: StoreUnavailable) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)
