"""Shared buckets in Redis: one key per (rule, client), one Lua script, micro-batched.

Every check queued during one event-loop iteration goes to Redis in one pipelined round
trip of EVALSHA calls, so the cost per request is a share of a round trip, not a whole
one, and the limit stays exact: each EVALSHA is still one atomic script on one key.
A single server is spoken to over a lean RESP connection (resp.py); a cluster through
redis-py's cluster client, which routes each key to its slot's node.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from lb.admission.bucket import Decision, decide
from lb.admission.resp import RespConnection, RespError, encode
from lb.admission.rules import Rule
from lb.config import Settings

log = logging.getLogger("lb.admission")

SCRIPT = resources.files("lb.admission").joinpath("leaky_bucket.lua").read_text()
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
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
    __slots__ = ("future", "key", "rule")

    def __init__(self, rule: Rule, key: str, future: asyncio.Future[Decision]) -> None:
        self.rule, self.key, self.future = rule, key, future


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, Exception) and str(reply).startswith("NOSCRIPT")
    )


class _Backend(Protocol):
    async def load(self) -> None: ...

    async def run(self, batch: list[_Pending]) -> list[Any]: ...

    def reset(self) -> None: ...

    async def close(self) -> None: ...


class _SingleServer:
    """One Redis server over one pipelined RESP connection.

    A batch goes as few EVALSHA calls of up to CHUNK keys each, so the script's fixed
    cost (and the clock read) is paid per batch, not per check; arguments are encoded
    once per rule.
    """

    CHUNK = 256

    def __init__(self, url: str, on_lost: Callable[[], None]) -> None:
        self._conn = RespConnection(url, on_lost=on_lost)
        self._head = b"$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n"
        self._args: dict[str, bytes] = {}

    async def load(self) -> None:
        if not self._conn.connected:
            await self._conn.connect()
        (reply,) = await self._conn.send(encode(b"SCRIPT", b"LOAD", SCRIPT.encode()), 1)
        if isinstance(reply, Exception) or reply.decode() != SHA:
            raise RespError(f"SCRIPT LOAD failed: {reply!r}")

    def _rule_args(self, rule: Rule) -> bytes:
        args = self._args.get(rule.name)
        if args is None:
            capacity, rate = str(rule.capacity).encode(), repr(rule.rate).encode()
            args = b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(capacity), capacity, len(rate), rate)
            self._args[rule.name] = args
        return args

    def _command(self, chunk: list[_Pending]) -> bytes:
        n = len(chunk)
        count = b"%d" % n
        parts = [b"*%d\r\n" % (3 + 3 * n), self._head, b"$%d\r\n%s\r\n" % (len(count), count)]
        for item in chunk:
            key = item.key.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(key), key))
        parts.extend([self._rule_args(item.rule) for item in chunk])
        return b"".join(parts)

    async def run(self, batch: list[_Pending]) -> list[Any]:
        if not self._conn.connected:
            await self.load()  # within the check's timeout: a refused connect fails fast
        size = self.CHUNK
        chunks = [batch[i : i + size] for i in range(0, len(batch), size)]
        payload = b"".join([self._command(chunk) for chunk in chunks])
        replies = await self._conn.send(payload, len(chunks))
        if any(_is_noscript(reply) for reply in replies):
            # Redis restarted or failed over and lost its script cache: load it, redo all
            # (a NOSCRIPT call ran nothing, and the calls that did run are not repeated)
            redo = [i for i, reply in enumerate(replies) if _is_noscript(reply)]
            await self.load()
            again = await self._conn.send(
                b"".join([self._command(chunks[i]) for i in redo]), len(redo)
            )
            for i, reply in zip(redo, again, strict=True):
                replies[i] = reply
        results: list[Any] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, Exception):
                results.extend([reply] * len(chunk))
            else:
                for allowed, level in zip(reply[0::2], reply[1::2], strict=True):
                    # a bucket the script could not read comes back as an error in place
                    results.append(allowed if isinstance(allowed, Exception) else (allowed, level))
        return results

    def reset(self) -> None:
        self._conn.abort()

    async def close(self) -> None:
        await self._conn.close()


class _Cluster:
    """A Redis Cluster through redis-py: each EVALSHA goes to its key's slot owner."""

    def __init__(self, url: str, timeout: float) -> None:
        self._client = RedisCluster.from_url(
            url,
            socket_timeout=max(timeout, 0.5),
            socket_connect_timeout=max(timeout, 0.5),
            retry=Retry(NoBackoff(), 0),
        )
        self._args: dict[str, tuple[int, str]] = {}

    async def load(self) -> None:
        await self._client.initialize()
        await self._client.script_load(SCRIPT)  # on every primary

    async def run(self, batch: list[_Pending]) -> list[Any]:
        replies = await self._pipeline(batch)
        missing = [i for i, reply in enumerate(replies) if _is_noscript(reply)]
        if missing:
            await self._client.script_load(SCRIPT)
            again = await self._pipeline([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, batch: list[_Pending]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for item in batch:
            rule = item.rule
            # execute_command: cluster pipelines refuse the evalsha() helper, not the command
            pipe.execute_command("EVALSHA", SHA, 1, item.key, rule.capacity, repr(rule.rate))
        result: list[Any] = await pipe.execute(raise_on_error=False)
        return result

    def reset(self) -> None:
        return None  # redis-py drops a connection that failed mid-command itself

    async def close(self) -> None:
        await self._client.aclose()


class RedisLimiter:
    """Leaky buckets in Redis (a single server or a cluster), shared by every lb process."""

    mode = "redis"

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        timeout: float = 0.05,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._backend: _Backend = (
            _Cluster(url, timeout) if cluster else _SingleServer(url, self._lost)
        )
        # told when the connection drops while idle, so the failure policy starts at once
        self.on_lost: Callable[[StoreUnavailable], None] = lambda exc: None
        self._timeout = timeout
        self._on_error = on_error
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_error: Callable[[], None] = lambda: None
    ) -> RedisLimiter:
        assert settings.redis_url is not None
        return cls(
            settings.redis_url,
            cluster=settings.redis_cluster,
            timeout=settings.redis_timeout,
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
        if self._flusher is not None:
            self._flusher.cancel()
        self._fail(self._queue, StoreUnavailable("closed"))
        self._queue = []
        await self._backend.close()

    async def check(self, rule: Rule, client: str) -> Decision:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        self._queue.append(_Pending(rule, bucket_key(rule.name, client), future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._drain())
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
                replies = await self._backend.run(batch)
        except asyncio.CancelledError:
            self._fail(batch, StoreUnavailable("cancelled"))
            raise
        except Exception as exc:
            # whatever went wrong, no request may hang on it: the batch fails over as a whole
            self._backend.reset()
            self._on_error()
            self._fail(batch, StoreUnavailable(f"{type(exc).__name__}: {exc}"))
            return
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

    @staticmethod
    def _fail(batch: list[_Pending], exc: StoreUnavailable) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)
