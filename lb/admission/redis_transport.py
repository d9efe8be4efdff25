"""How a batch of bucket checks travels to Redis: one server, or a cluster (the I/O seam).

A single server gets a whole batch over one pipelined RESP connection (resp.py) in a few
script calls; a cluster gets each node's share over that node's connection, one script
call per slot. Both reload the script when Redis has lost it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot

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
    return isinstance(reply, Exception) and str(reply).startswith("NOSCRIPT")


class Transport(Protocol):
    """Sends a batch; returns one reply per check: (admitted, level) or an exception."""

    async def load(self) -> None: ...

    async def run(self, batch: list[Pending]) -> list[Any]: ...

    def last_read(self) -> float: ...

    def reset(self) -> None: ...

    async def close(self) -> None: ...


class _Node:
    """One Redis server over one pipelined RESP connection, with the script loaded.

    A chunk of checks goes as one EVALSHA call with all its keys, so the script's fixed
    cost (and the clock read) is paid per chunk, not per check; the arguments of each rule
    are encoded once.
    """

    def __init__(self, url: str, on_lost: Callable[[], None]) -> None:
        self.conn = RespConnection(url, on_lost=on_lost)
        self._head = b"$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n"
        # by rule (name and shape): a policy change under the same name gets new arguments
        self._args: dict[Rule, bytes] = {}
        self._connecting: asyncio.Lock | None = None

    async def load(self) -> None:
        # batches run concurrently: only one of them may (re)connect, the others wait for it
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if not self.conn.connected:
                await self.conn.connect()
            (reply,) = await self.conn.send(encode(b"SCRIPT", b"LOAD", SCRIPT.encode()), 1)
        if isinstance(reply, Exception) or reply.decode() != SHA:
            raise RespError(f"SCRIPT LOAD failed: {reply!r}")

    def _rule_args(self, rule: Rule) -> bytes:
        args = self._args.get(rule)
        if args is None:
            capacity, rate = str(rule.capacity).encode(), repr(rule.rate).encode()
            args = b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(capacity), capacity, len(rate), rate)
            if len(self._args) > 1024:
                self._args.clear()  # rules of policies long replaced
            self._args[rule] = args
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

    async def run(self, chunks: list[list[Pending]]) -> list[Any]:
        """One reply per check, in chunk order: (admitted, level) or an exception."""
        if not self.conn.connected:
            await self.load()  # within the check's timeout: a refused connect fails fast
        payload = b"".join([self._command(chunk) for chunk in chunks])
        replies = await self.conn.send(payload, len(chunks))
        if any(_is_noscript(reply) for reply in replies):
            # Redis restarted or failed over and lost its script cache: load it, redo those
            # (a NOSCRIPT call ran nothing, and the calls that did run are not repeated)
            redo = [i for i, reply in enumerate(replies) if _is_noscript(reply)]
            await self.load()
            again = await self.conn.send(
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


class SingleServer:
    """One Redis server: a batch is a few script calls of up to CHUNK keys, one round trip."""

    CHUNK = 256

    def __init__(self, url: str, on_lost: Callable[[], None]) -> None:
        self._node = _Node(url, on_lost)

    async def load(self) -> None:
        await self._node.load()

    async def run(self, batch: list[Pending]) -> list[Any]:
        size = self.CHUNK
        return await self._node.run([batch[i : i + size] for i in range(0, len(batch), size)])

    def last_read(self) -> float:
        return self._node.conn.last_read

    def reset(self) -> None:
        self._node.conn.abort()

    async def close(self) -> None:
        await self._node.conn.close()


class Cluster:
    """A Redis Cluster: the slot map from CLUSTER SLOTS, one pipelined connection per primary.

    A batch is split by node and, within a node, by slot (a script call may only touch
    keys of one slot); every node gets its share in one round trip, all nodes at once.
    A MOVED or ASK answer means the map is stale: those checks fail over and the next
    load (the failure policy's reconnect probe) reads the map again.
    """

    def __init__(self, url: str, on_lost: Callable[[], None]) -> None:
        parts = urlsplit(url)
        self._scheme = parts.scheme
        self._userinfo = parts.netloc.rpartition("@")[0]
        self._seeds = [(parts.hostname or "127.0.0.1", parts.port or 6379)]
        self._on_lost = on_lost
        self._nodes: dict[tuple[str, int], _Node] = {}
        self._slots: list[tuple[str, int]] | None = None

    def _url(self, host: str, port: int) -> str:
        auth = f"{self._userinfo}@" if self._userinfo else ""
        host = f"[{host}]" if ":" in host else host
        return f"{self._scheme}://{auth}{host}:{port}/0"

    async def load(self) -> None:
        """Read the slot map from a known node, connect to every primary, load the script."""
        table = await self._slot_table()
        slots: list[tuple[str, int] | None] = [None] * SLOTS
        for start, end, primary, *_ in table:
            host = primary[0].decode() or self._seeds[0][0]
            slots[start : end + 1] = [(host, int(primary[1]))] * (end + 1 - start)
        if any(addr is None for addr in slots):
            raise RespError("the cluster does not cover every slot")
        covered = cast(list[tuple[str, int]], slots)
        primaries = set(covered)
        for known in list(self._nodes):
            if known not in primaries:
                self._nodes.pop(known).conn.abort()
        for primary in primaries:
            if primary not in self._nodes:
                self._nodes[primary] = _Node(self._url(*primary), self._on_lost)
        await asyncio.gather(*(node.load() for node in self._nodes.values()))
        # every primary must see a healthy cluster (a node just back may still converge)
        states = await asyncio.gather(
            *(node.conn.send(encode(b"CLUSTER", b"INFO"), 1) for node in self._nodes.values())
        )
        if not all(b"cluster_state:ok" in state[0] for state in states):
            raise RespError("a cluster node does not yet report cluster_state:ok")
        self._seeds = sorted({*self._seeds, *self._nodes})
        self._slots = covered

    async def _slot_table(self) -> list[Any]:
        error: Exception = RespError("no cluster node answered")
        for host, port in self._seeds:
            probe = RespConnection(self._url(host, port))
            try:
                await probe.connect()
                (table,) = await probe.send(encode(b"CLUSTER", b"SLOTS"), 1)
            except (OSError, RespError) as exc:
                error = exc
                continue
            finally:
                probe.abort()
            if isinstance(table, Exception):
                error = table
                continue
            return cast(list[Any], table)
        raise error

    async def run(self, batch: list[Pending]) -> list[Any]:
        slots = self._slots
        if slots is None:
            # the map is read by load(): at start and by the failure policy's reconnect probe
            raise RespError("no cluster slot map")
        by_node: dict[tuple[str, int], dict[int, list[int]]] = {}
        for i, item in enumerate(batch):
            slot = key_slot(item.key.encode())
            by_node.setdefault(slots[slot], {}).setdefault(slot, []).append(i)
        plans = [(self._nodes[addr], list(groups.values())) for addr, groups in by_node.items()]
        answers = await asyncio.gather(
            *(node.run([[batch[i] for i in group] for group in groups]) for node, groups in plans)
        )
        results: list[Any] = [None] * len(batch)
        for (_, groups), replies in zip(plans, answers, strict=True):
            order = [i for group in groups for i in group]
            for i, reply in zip(order, replies, strict=True):
                if isinstance(reply, Exception) and str(reply).startswith(("MOVED", "ASK")):
                    self._slots = None  # resharded or failed over: read the map again
                results[i] = reply
        return results

    def last_read(self) -> float:
        return min((node.conn.last_read for node in self._nodes.values()), default=0.0)

    def reset(self) -> None:
        for node in self._nodes.values():
            node.conn.abort()
        self._slots = None

    async def close(self) -> None:
        for node in self._nodes.values():
            await node.conn.close()
        self._nodes.clear()
