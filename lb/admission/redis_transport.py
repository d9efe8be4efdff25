"""How a batch of bucket checks travels to Redis: one server, or a cluster (the I/O seam).

A single server gets a whole batch over one pipelined RESP connection (resp.py) in a few
script calls; a cluster gets one call per key through redis-py's cluster client, which
routes each key to its slot's node. Both reload the script when Redis has lost it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

from redis.asyncio import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from lb.admission.bucket import Decision
from lb.admission.resp import RespConnection, RespError, encode
from lb.admission.rules import Rule

SCRIPT = resources.files("lb.admission").joinpath("leaky_bucket.lua").read_text()
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class Pending:
    """One queued check: its rule, its Redis key, and the request waiting for it."""

    __slots__ = ("future", "key", "rule")

    def __init__(self, rule: Rule, key: str, future: asyncio.Future[Decision]) -> None:
        self.rule, self.key, self.future = rule, key, future


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, Exception) and str(reply).startswith("NOSCRIPT")
    )


class Transport(Protocol):
    """Sends a batch; returns one reply per check: (admitted, level) or an exception."""

    async def load(self) -> None: ...

    async def run(self, batch: list[Pending]) -> list[Any]: ...

    def reset(self) -> None: ...

    async def close(self) -> None: ...


class SingleServer:
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

    def _command(self, chunk: list[Pending]) -> bytes:
        n = len(chunk)
        count = b"%d" % n
        parts = [b"*%d\r\n" % (3 + 3 * n), self._head, b"$%d\r\n%s\r\n" % (len(count), count)]
        for item in chunk:
            key = item.key.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(key), key))
        parts.extend([self._rule_args(item.rule) for item in chunk])
        return b"".join(parts)

    async def run(self, batch: list[Pending]) -> list[Any]:
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


class Cluster:
    """A Redis Cluster through redis-py: each EVALSHA goes to its key's slot owner."""

    def __init__(self, url: str, timeout: float) -> None:
        self._client = RedisCluster.from_url(
            url,
            socket_timeout=max(timeout, 0.5),
            socket_connect_timeout=max(timeout, 0.5),
            retry=Retry(NoBackoff(), 0),
        )

    async def load(self) -> None:
        await self._client.initialize()
        await self._client.script_load(SCRIPT)  # on every primary

    async def run(self, batch: list[Pending]) -> list[Any]:
        replies = await self._pipeline(batch)
        missing = [i for i, reply in enumerate(replies) if _is_noscript(reply)]
        if missing:
            await self._client.script_load(SCRIPT)
            again = await self._pipeline([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        # a bucket the script could not read comes back as an error in place of "admitted"
        return [
            reply[0] if isinstance(reply, list) and isinstance(reply[0], Exception) else reply
            for reply in replies
        ]

    async def _pipeline(self, batch: list[Pending]) -> list[Any]:
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
