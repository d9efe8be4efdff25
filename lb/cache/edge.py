"""The cache as the proxy sees it: `handle()` a GET/HEAD, `on_head()` of every response.

A request is answered from a fresh entry (HIT), from a stale one while one background fetch
refreshes it (STALE, stale-while-revalidate) or while the backends fail (STALE,
stale-if-error), from the entry another request is fetching (COALESCED), or it goes to a
backend (MISS) with a `Fill` that tees the body into a new entry while it streams to the
client. Requests with Authorization or cookies are never answered from the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from lb.cache.coalesce import Flight, Flights, Landing
from lb.cache.policy import (
    CACHEABLE_METHODS,
    RawHeaders,
    RequestTraits,
    cache_key,
    is_error,
    purge_tags,
    request_traits,
    storable,
    surrogate_keys,
    vary_names,
)
from lb.cache.store import Entry, Store
from lb.errors import LbError
from lb.headers import HOP_BY_HOP, connection_tokens
from lb.http.request import Request

log = logging.getLogger("lb.cache")

Answer = tuple[int, str, bool]
Headers = tuple[tuple[str, str], ...]
Forward = Callable[[Request, Any, "Fill | None"], Awaitable[Answer]]

CACHE_BACKEND: Final = "cache"  # the backend label of answers the cache gave
X_CACHE: Final = "X-Cache"
HIT_FOR_MISS: Final = 10.0  # seconds a key whose answer was uncacheable is not waited for
# ours, or per request: never stored, never shown to clients
_INTERNAL: Final = frozenset({b"x-cache", b"x-cache-purge", b"surrogate-key"})
_NOT_STORED: Final = (
    HOP_BY_HOP
    | _INTERNAL
    | {
        b"x-request-id",
        b"age",
        b"content-length",
        b"set-cookie",
        b"ratelimit",
        b"ratelimit-policy",
    }
)
_CONDITIONAL: Final = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)
RESULTS: Final = ("hit", "stale_revalidate", "stale_error", "coalesced", "miss", "bypass")


@dataclass(frozen=True, slots=True)
class CacheOptions:
    max_bytes: int
    max_entry_bytes: int
    lock_timeout: float


class CacheEvents(Protocol):
    """Where the cache reports (lb/metrics.py's CacheMetrics implements it)."""

    def result(self, name: str) -> None: ...

    def purged(self, source: str, keys: int) -> None: ...


class _Silent:
    def result(self, name: str) -> None:
        return None

    def purged(self, source: str, keys: int) -> None:
        return None


class EdgeCache:
    """One worker's cache: the store, the fetches in flight, the counters."""

    def __init__(
        self,
        options: CacheOptions,
        *,
        loop: asyncio.AbstractEventLoop,
        events: CacheEvents | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.options = options
        self.loop = loop
        self.clock = clock or loop.time
        self.store = Store(options.max_bytes, self.clock)
        self.flights = Flights(loop, options.lock_timeout)
        self.events: CacheEvents = events or _Silent()
        self.counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self.purges: dict[str, int] = {"header": 0, "redis": 0, "gap": 0}
        self.subscriber: Any = None  # the Redis purge subscriber, for the status page
        self._refreshes: set[asyncio.Task[None]] = set()
        self.on_tick: Callable[[], None] | None = None

    # -- the proxy's side ----------------------------------------------------------------------

    @staticmethod
    def wants(request: Request) -> bool:
        """Is this a request the cache looks at (GET or HEAD, no upgrade)?"""
        return request.method in CACHEABLE_METHODS and not request.upgrade

    async def handle(
        self,
        request: Request,
        client: Any,
        answer_headers: Headers,
        scheme: str,
        forward: Forward,
        *,
        draining: bool = False,
    ) -> Answer:
        """Answer a GET/HEAD from the cache, or forward it (through `forward`) with a Fill."""
        traits = request_traits(request.raw_headers, request.body is not None)
        if traits.bypass:
            self._count("bypass")
            return await forward(request, client, None)
        key = cache_key(scheme, _host(request.raw_headers), request.target)
        raw = request.raw_headers
        stale: Entry | None = None
        if traits.personal:
            self._count("bypass")  # never answered from the cache; its answer may be stored
            return await self._fetch(
                key, request, client, answer_headers, traits, None, None, draining, forward
            )
        for _ in range(
            3
        ):  # a fetch cut short lets its waiters ask again, a bounded number of times
            now = self.clock()
            entry = self.store.get(key, raw)
            if entry is not None:
                if entry.fresh(now):
                    self._count("hit")
                    return self.serve(entry, request, client, answer_headers, b"HIT", draining)
                if entry.within_revalidate(now):
                    self._count("stale_revalidate")
                    self._refresh(key, request, traits, entry, forward)
                    return self.serve(entry, request, client, answer_headers, b"STALE", draining)
                stale = entry  # perhaps still good for stale-if-error
            if self.store.passing(key):
                break
            flight = self.flights.get(key)
            if flight is None:
                if request.method != "GET" or traits.no_store:
                    break
                flight = self.flights.lead(key)
                self._count("miss")
                return await self._fetch(
                    key, request, client, answer_headers, traits, flight, stale, draining, forward
                )
            result = await self.flights.wait(flight)
            if result is None:
                break  # waited long enough: on our own
            landing, landed = result
            if landing is Landing.STORED:
                mine = self.store.get(key, raw)  # the variant this request selects
                if mine is not None:
                    self._count("coalesced")
                    return self.serve(mine, request, client, answer_headers, b"COALESCED", draining)
                break
            if (
                landing is Landing.STALE
                and landed is not None
                and landed.within_error(self.clock())
            ):
                self._count("stale_error")
                return self.serve(landed, request, client, answer_headers, b"STALE", draining)
            if landing is Landing.PASS:
                break
        self._count("miss")
        return await self._fetch(
            key, request, client, answer_headers, traits, None, stale, draining, forward
        )

    def on_head(self, conn: Any, fill: Fill | None) -> Answer | None:
        """Called with every response head before the client sees it. Acts on the backend's
        purge orders, strips the cache's headers, and for a Fill decides whether to store
        (or to answer from a stale entry instead of a backend error: then the answer)."""
        headers: list[tuple[bytes, bytes]] = conn.headers
        if any(name.lower() in _INTERNAL for name, _ in headers):
            tags = purge_tags(headers)
            if tags:
                self.purge(tags, "header")
            if fill is not None:
                fill.tags = surrogate_keys(headers)
            headers[:] = [(n, v) for n, v in headers if n.lower() not in _INTERNAL]
        if fill is None:
            return None
        return fill.on_head(conn)

    # -- answers from memory -------------------------------------------------------------------

    def serve(
        self,
        entry: Entry,
        request: Request,
        client: Any,
        answer_headers: Headers,
        label: bytes,
        draining: bool,
    ) -> Answer:
        keep = request.keep_alive and not draining
        parts = [entry.head, b"Age: %d\r\nX-Cache: %s\r\n" % (int(entry.age(self.clock())), label)]
        parts += [f"{name}: {value}\r\n".encode("latin-1") for name, value in answer_headers]
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif request.version != "1.1":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if request.method != "HEAD":
            parts.append(entry.body)
        client.write(b"".join(parts))
        return entry.status, CACHE_BACKEND, keep

    # -- purges --------------------------------------------------------------------------------

    def purge(self, tags: frozenset[str], source: str) -> int:
        dropped = self.store.purge(tags)
        self.purges[source] = self.purges.get(source, 0) + 1
        self.events.purged(source, dropped)
        return dropped

    def clear(self, source: str = "gap") -> None:
        """Forget everything: purge orders may have been missed."""
        self.store.clear()
        self.purges[source] = self.purges.get(source, 0) + 1
        self.events.purged(source, 0)

    def tick(self) -> None:
        """Periodic: drop dead entries, report the sizes."""
        self.store.sweep()
        if self.on_tick is not None:
            self.on_tick()

    def snapshot(self) -> dict[str, Any]:
        """This worker's cache for /status."""
        store = self.store
        return {
            "max_bytes": store.max_bytes,
            "bytes": store.bytes,
            "entries": len(store),
            "keys": store.keys,
            "evicted": store.evicted,
            "purged": store.purged,
            "in_flight": len(self.flights),
            "lock_timeouts": self.flights.timeouts,
            "results": dict(self.counts),
            "purges": dict(self.purges),
            "subscriber": None if self.subscriber is None else self.subscriber.state,
        }

    async def close(self) -> None:
        for task in list(self._refreshes):
            task.cancel()
        if self.subscriber is not None:
            await self.subscriber.close()

    # -- internals -----------------------------------------------------------------------------

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        self.events.result(result)

    async def _fetch(
        self,
        key: str,
        request: Request,
        client: Any,
        answer_headers: Headers,
        traits: RequestTraits,
        flight: Flight | None,
        stale: Entry | None,
        draining: bool,
        forward: Forward,
    ) -> Answer:
        fill = Fill(self, key, request, client, answer_headers, traits, flight, stale, draining)
        try:
            return await forward(_unconditional(request), client, fill)
        except LbError as exc:
            if stale is not None and stale.within_error(self.clock()) and not fill.answered:
                fill.landing, fill.entry = Landing.STALE, stale
                if not isinstance(client, NullClient):
                    self._count("stale_error")
                return self.serve(stale, request, client, answer_headers, b"STALE", draining)
            exc.headers = (*exc.headers, (X_CACHE, "MISS"))
            fill.landing = Landing.PASS
            raise
        finally:
            if flight is not None:
                self.flights.land(flight, fill.landing, fill.entry)

    def _refresh(
        self, key: str, request: Request, traits: RequestTraits, stale: Entry, forward: Forward
    ) -> None:
        """stale-while-revalidate: one background fetch of the key, if none is under way."""
        flight = self.flights.lead(key)
        if flight is None:
            return
        get = _unconditional(request, method="GET")

        async def run() -> None:
            try:
                await self._fetch(key, get, NullClient(), (), traits, flight, stale, False, forward)
            except Exception as exc:  # the stale entry stays; stale-if-error may use it
                log.debug("background refresh of %s failed: %s", key, exc)

        task = self.loop.create_task(run())
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)


class Fill:
    """One fetch that may become an entry: decides at the head, tees the body, stores."""

    def __init__(
        self,
        cache: EdgeCache,
        key: str,
        request: Request,
        client: Any,
        answer_headers: Headers,
        traits: RequestTraits,
        flight: Flight | None,
        stale: Entry | None,
        draining: bool,
    ) -> None:
        self.cache = cache
        self.key = key
        self.request = request
        self.client = client
        self.answer_headers = answer_headers
        self.traits = traits
        self.flight = flight
        self.stale = stale
        self.draining = draining
        self.seq = cache.store.purge_seq  # purges after this may make the answer outdated
        self.tags: frozenset[str] = frozenset()
        self.landing = Landing.RETRY
        self.entry: Entry | None = None
        self.answered = False
        self._chunks: list[bytes] | None = None
        self._size = 0
        self._status = 0
        self._head = b""
        self._vary: tuple[str, ...] = ()
        self._freshness: Any = None

    def on_head(self, conn: Any) -> Answer | None:
        cache = self.cache
        status: int = conn.status
        headers: list[tuple[bytes, bytes]] = conn.headers
        if is_error(status) and self.stale is not None and self.stale.within_error(cache.clock()):
            # stale-if-error: the stale entry answers instead of the backend's error
            self.landing, self.entry = Landing.STALE, self.stale
            self.answered = True
            if not isinstance(self.client, NullClient):  # not a background refresh
                cache._count("stale_error")
            return cache.serve(
                self.stale, self.request, self.client, self.answer_headers, b"STALE", self.draining
            )
        headers.append((b"X-Cache", b"MISS"))
        if is_error(status):
            self.landing = Landing.PASS
            return None
        freshness, why = (
            (None, "HEAD")
            if self.request.method != "GET"
            else storable(status, headers, self.traits)
        )
        length = _content_length(headers)
        if freshness is not None and length is not None and length > cache.options.max_entry_bytes:
            freshness, why = None, "too large"
        if freshness is None:
            self.landing = Landing.PASS
            if not self.traits.personal and why != "HEAD":
                cache.store.mark_pass(self.key, HIT_FOR_MISS)
            return None
        names = vary_names(headers) or ()
        self._status, self._vary, self._freshness = status, names, freshness
        self._head = _render_head(status, conn.reason, headers, conn.has_connection_header)
        self._chunks = []
        return None

    def feed(self, chunk: bytes) -> None:
        """A piece of the body on its way to the client."""
        chunks = self._chunks
        if chunks is None:
            return
        self._size += len(chunk)
        if self._size > self.cache.options.max_entry_bytes:
            self._chunks = None  # too large to keep: stop capturing
            self.landing = Landing.PASS
            self.cache.store.mark_pass(self.key, HIT_FOR_MISS)
            return
        chunks.append(chunk)

    def finish(self, complete: bool) -> None:
        """The response went through (`complete`) or was cut short."""
        chunks = self._chunks
        self._chunks = None
        if chunks is None:
            return
        if not complete:
            self.landing = Landing.RETRY
            return
        store = self.cache.store
        if store.purged_since(self.seq, self.tags):
            self.landing = Landing.RETRY  # fetched before a purge of it: not good enough
            return
        body = b"".join(chunks)
        head = self._head + b"Content-Length: %d\r\n" % len(body)
        entry = Entry(self._status, head, body, self._freshness, store.clock(), self.tags)
        if store.put(self.key, self._vary, self.request.raw_headers, entry):
            self.entry = entry
            self.landing = Landing.STORED
        else:
            self.landing = Landing.PASS


class NullClient:
    """Where a background refresh's answer goes: nowhere (only the cache keeps it)."""

    response_started = False
    closed = False

    def write(self, data: bytes) -> None:
        self.response_started = True

    async def drain(self) -> None:
        return None

    def abort(self) -> None:
        return None

    def close(self) -> None:
        return None


def _host(raw: RawHeaders) -> str:
    for name, value in raw:
        if len(name) == 4 and name.lower() == b"host":
            return value.decode("latin-1")
    return ""


def _content_length(headers: RawHeaders) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _render_head(status: int, reason: str, headers: RawHeaders, scan_connection: bool) -> bytes:
    """Status line and the headers worth storing (not hop-by-hop, not per request)."""
    named = connection_tokens(headers) if scan_connection else frozenset()
    drop = _NOT_STORED | named | {b"x-cache"}
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, (reason or "OK").encode("latin-1"))]
    lines += [b"%s: %s\r\n" % (n, v) for n, v in headers if n.lower() not in drop]
    return b"".join(lines)


def _unconditional(request: Request, method: str | None = None) -> Request:
    """The request as a fill sends it: without validators (the entry needs a full answer)."""
    raw = [(n, v) for n, v in request.raw_headers if n.lower() not in _CONDITIONAL]
    if len(raw) == len(request.raw_headers) and method in (None, request.method):
        return request
    return Request(
        method=method or request.method,
        target=request.target,
        version=request.version,
        raw_headers=raw,
        headers=request.headers,
        header_bytes=request.header_bytes,
        keep_alive=request.keep_alive,
        upgrade=False,
        peer=request.peer,
        body=None,
    )
