"""Purge orders from the backends over Redis pub/sub: every lb worker drops the same entries.

The backend publishes `tag tag ...` on CHANNEL after a write commits (backend/tours/cache.py).
Pub/sub ignores the database number, so the lb (db 0) hears the backend (db 1). A connection
that drops may have missed orders: on every reconnect the worker forgets its whole cache.
A PING every few seconds finds a connection that died silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote, urlsplit

import hiredis

from lb.admission.resp import encode

CHANNEL: Final = "tourbook:cache:purge"
PING_EVERY: Final = 5.0
BACKOFF_MAX: Final = 5.0

log = logging.getLogger("lb.cache.purge")


class PurgeSubscriber:
    """SUBSCRIBE to CHANNEL; `on_purge(tags)` per message, `on_gap()` after a reconnect."""

    def __init__(
        self,
        url: str,
        on_purge: Callable[[frozenset[str]], object],
        on_gap: Callable[[], None],
        *,
        channel: str = CHANNEL,
    ) -> None:
        self.url = url
        self.channel = channel
        self.on_purge = on_purge
        self.on_gap = on_gap
        self.state = "connecting"
        self.messages = 0
        self._task: asyncio.Task[None] | None = None
        self._subscribed_once = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cache-purge")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.state != "down":
                    log.warning("cache purge subscription lost (%s): retrying", exc)
                self.state = "down"
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _session(self) -> None:
        reader, writer = await self._connect()
        try:
            parser = hiredis.Reader()
            writer.write(encode(b"SUBSCRIBE", self.channel.encode()))
            pinged = False
            while True:
                try:
                    async with asyncio.timeout(PING_EVERY):
                        data = await reader.read(65536)
                except TimeoutError:
                    if pinged:
                        raise ConnectionError("no answer to PING") from None
                    writer.write(encode(b"PING"))
                    pinged = True
                    continue
                if not data:
                    raise ConnectionError("closed by the server")
                pinged = False
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    self._reply(reply)
        finally:
            writer.close()

    def _reply(self, reply: object) -> None:
        if isinstance(reply, Exception):
            raise ConnectionError(f"refused: {reply}")
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == b"subscribe":
            if self._subscribed_once:
                self.on_gap()  # orders sent while we were away are lost: forget everything
            self._subscribed_once = True
            self.state = "subscribed"
        elif kind == b"message" and len(reply) == 3:
            self.messages += 1
            tags = frozenset(reply[2].decode("utf-8", "replace").split())
            if tags:
                self.on_purge(tags)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            reader, writer = await asyncio.open_unix_connection(parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            reader, writer = await asyncio.open_connection(
                parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
            )
        if parts.password:
            user = (unquote(parts.username).encode(),) if parts.username else ()
            writer.write(encode(b"AUTH", *user, unquote(parts.password).encode()))
            parser = hiredis.Reader()
            while (reply := parser.gets()) is False:
                data = await reader.read(4096)
                if not data:
                    raise ConnectionError("closed during AUTH")
                parser.feed(data)
            if isinstance(reply, Exception):
                writer.close()
                raise ConnectionError(f"AUTH refused: {reply}")
        return reader, writer
