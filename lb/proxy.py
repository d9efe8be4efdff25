"""The proxy handler: admit, receive the body, try backends (retrying when allowed), relay, report.

Read top to bottom: `__call__` (accounting) -> `_handle` (size check, identity, admission,
forwarding headers, the cache) -> `_forward` (request buffering, then attempts on backends
until one answers or no retry is allowed) -> `_respond` (relay, report the attempt once).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Final

from lb import headers as h
from lb.accesslog import AccessLog
from lb.admission.service import Admission
from lb.attempt import Exchange, Failed, attempt
from lb.cache.edge import EdgeCache, Fill
from lb.errors import BadGateway, LbError, NoBackend, render_error
from lb.http.connection import ClientConnection
from lb.http.request import BodyError, Request
from lb.http.spool import ClientGone
from lb.http.upstream import Upstream, UpstreamConnection
from lb.identity import ClientResolver
from lb.metrics import FLUSH_EVERY, NO_BACKEND, Metrics
from lb.options import ProxyOptions
from lb.overload import Admitter
from lb.relay import relay, tunnel
from lb.upload import check_length, prepare
from lb.upstream.backend import Backend, Outcome, classify_status
from lb.upstream.pool import Pool

log = logging.getLogger("lb.proxy")

CLIENT_GONE: Final = 499  # nginx's status for "the client closed the connection first"

Answer = tuple[int, str, bool]  # status sent, backend name (or "none"), keep the connection
Headers = tuple[tuple[str, str], ...]


class Proxy:
    """Handles every request of the public listener."""

    def __init__(
        self,
        options: ProxyOptions,
        *,
        pool: Pool,
        upstream: Upstream,
        admission: Admission | None,
        metrics: Metrics,
        resolver: ClientResolver,
        rng: random.Random,
        loop: asyncio.AbstractEventLoop,
        cache: EdgeCache | None = None,
        admitter: Admitter | None = None,
    ) -> None:
        self.options = options
        self.cache = cache  # the micro-cache (lb/cache/); None when LB_CACHE_BYTES=0
        self.admitter = admitter  # overload control (lb/overload.py); None: no limits
        self.pool = pool
        self.upstream = upstream
        self.admission = admission
        self.metrics = metrics
        self.resolver = resolver
        self.rng = rng
        self.loop = loop
        self.draining = False
        self.in_flight = 0
        self.answered: dict[str, int] = {}  # responses by backend name (or "none")
        self._idle_empty = asyncio.Event()
        self._idle_empty.set()
        self.access_log = AccessLog() if options.access_log else None
        metrics.before_collect.append(self.flush_counts)  # a scrape sees every request

    async def __call__(self, request: Request, client: ClientConnection) -> bool:
        """Answer `request` on `client`; True when the connection may carry another one."""
        started = self.loop.time()
        self.in_flight += 1
        self._idle_empty.clear()
        rid = h.request_id(request.header(b"x-request-id"), self.rng)
        status, backend_name, keep = CLIENT_GONE, NO_BACKEND, False
        try:
            status, backend_name, keep = await self._handle(request, client, rid)
        except ClientGone:
            client.close()  # gone, or already told off by the HTTP layer: nothing to answer
        except LbError as exc:
            status, keep = exc.status, self._send_error(request, client, exc, rid)
        except (ConnectionError, BodyError):
            pass  # the client went away: CLIENT_GONE, nothing to answer
        finally:
            self.in_flight -= 1
            seconds = self.loop.time() - started
            self.metrics.observe(backend_name, status, seconds)
            if self.in_flight == 0:
                self._idle_empty.set()
                self.flush_counts()  # idle: nothing to batch with
            elif self.metrics.pending >= FLUSH_EVERY:
                self.flush_counts()
            self.answered[backend_name] = self.answered.get(backend_name, 0) + 1
            if self.access_log is not None:
                line = (rid, request.peer, request.method, request.path, status, backend_name)
                self.access_log.line(*line, seconds * 1000)
        return keep and not self.draining

    def protocol_error(self, error: LbError) -> None:
        """Count an answer the HTTP layer wrote for a request that never reached us."""
        self.metrics.lb_error(error.code)
        self.metrics.observe(NO_BACKEND, error.status, 0.0)
        self.answered[NO_BACKEND] = self.answered.get(NO_BACKEND, 0) + 1
        self.flush_counts()

    def flush_counts(self) -> None:
        """Counts kept in plain ints on the hot path, into their metrics (when idle, every
        FLUSH_EVERY requests, every tick and before a scrape)."""
        self.metrics.flush(self.in_flight)
        if self.admission is not None:
            self.admission.flush_counts()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle_empty.wait()

    def _send_error(
        self, request: Request, client: ClientConnection, error: LbError, rid: str
    ) -> bool:
        """Write the lb's own answer; False when the connection must close after it."""
        self.metrics.lb_error(error.code)
        if client.response_started:
            client.abort()  # too late for an error page: the client must see the cut
            return False
        unread = request.body is not None and not request.body.done
        close = unread or self.draining or not request.keep_alive
        data = render_error(
            error,
            ((h.X_REQUEST_ID, rid),),
            close=close,
            head_only=request.method == "HEAD",
            accept=request.header(b"accept"),  # a browser gets a page, an API client JSON
        )
        try:
            client.write(data)
        except ConnectionError:
            return False
        return not close

    # -- one request -------------------------------------------------------------------------

    async def _handle(self, request: Request, client: ClientConnection, rid: str) -> Answer:
        check_length(request, self.options.max_body_bytes)  # 413 before reading any of it
        xff = request.header(b"x-forwarded-for")
        who = self.resolver.resolve(request.peer, xff)
        answer_headers: Headers = ((h.X_REQUEST_ID, rid),)
        try:
            if self.admission is not None:
                verdict = await self.admission.check(request.method, request.path, who.key)
                answer_headers = (*answer_headers, *verdict.headers)
                if not verdict.allowed:
                    raise LbError(verdict.detail, status=verdict.status, code=verdict.code)
            proto = request.header(b"x-forwarded-proto")
            upstream_extra = h.forwarding(request.peer, xff, proto, who, rid)
            if self.cache is not None and self.cache.wants(request):
                # after admission (as nginx's limit_req runs before its cache): the cache
                # answers from memory, or forwards with a Fill that captures the answer
                return await self.cache.handle(
                    request,
                    client,
                    answer_headers,
                    h.forwarded_proto(proto, who.via_trusted_proxy),
                    lambda req, to, fill: self._forward(
                        req, to, upstream_extra, answer_headers, who.key, fill
                    ),
                    draining=self.draining,
                )
            return await self._forward(request, client, upstream_extra, answer_headers, who.key)
        except LbError as exc:
            exc.headers = (*exc.headers, *answer_headers[1:])  # e.g. the RateLimit fields
            raise

    async def _forward(
        self,
        request: Request,
        client: ClientConnection,
        upstream_extra: Headers,
        answer_headers: Headers,
        client_key: str,
        fill: Fill | None = None,
    ) -> Answer:
        exchange, buffered = await prepare(
            request, client, self.options, upstream_extra, answer_headers, client_key, fill,
            self.loop.time(),  # (get_running_loop() would cost a getpid() system call)
        )  # fmt: skip
        try:
            return await self._attempts(exchange)
        finally:
            if buffered is not None:
                buffered.close()

    async def _attempts(self, ex: Exchange) -> Answer:
        """Attempts on backends until one answers, or no retry is allowed."""
        pool = self.pool
        tried: list[Backend] = []
        retries = 0
        last: Failed | None = None
        pending: Backend | None = None  # already picked for the next attempt
        admitter = self.admitter
        klass = admitter.classify(ex.request.method, ex.request.path) if admitter else ""
        while True:
            with pool.retry_budget.permit(held=retries > 0):
                if pending is None and admitter is not None:
                    # a slot under a backend's adaptive limit, a bounded wait for one, or
                    # Overloaded (503); the slot is the pool's pick: pool.finish() frees it
                    pending = await admitter.acquire(klass, tried)
                backend = pending or pool.pick(tried)
                pending = None
                if backend is None:
                    raise last.error if last is not None else NoBackend()
                tried.append(backend)
                result = await self._try(ex, backend)
                if isinstance(result, UpstreamConnection):
                    outcome = classify_status(result.status)
                    if outcome is Outcome.SERVER_ERROR:
                        pending = pool.pick(tried)
                    if pending is None or not pool.may_retry(
                        ex.retry_key, outcome, True, retries, streamed=ex.streamed
                    ):
                        if pending is not None:
                            pool.finish(pending, Outcome.CANCELLED)  # not needed after all
                        return await self._respond(ex, result, backend, outcome)
                    # another backend gets a go; this answer is dropped
                    result.abort()
                    pool.finish(backend, outcome, status=result.status, client=ex.client_key)
                    last = Failed(outcome, True, BadGateway("Backend answered with an error."))
                    retries += 1
                    self.metrics.retry(outcome.value)
                    continue
                pool.finish(backend, result.outcome)
                last = result
            # this attempt's permit is back: may another attempt start?
            if not pool.may_retry(
                ex.retry_key, last.outcome, last.reached, retries, streamed=ex.streamed
            ):
                raise last.error
            retries += 1
            self.metrics.retry(last.outcome.value)

    async def _try(self, ex: Exchange, backend: Backend) -> UpstreamConnection | Failed:
        """One attempt on `backend`; reports it as cancelled if the client ends it."""
        conns = self.upstream.pool(backend.name, backend.url.host, backend.url.port)
        try:
            result = await attempt(conns, ex, self.options.timeouts)
            if self.admitter is not None and isinstance(result, UpstreamConnection):
                self.admitter.sample(backend, result.backend_latency())
            return result
        except BaseException:  # the client's fault or gone, or cancelled
            self.pool.finish(backend, Outcome.CANCELLED)
            raise

    async def _respond(
        self, ex: Exchange, conn: UpstreamConnection, backend: Backend, outcome: Outcome
    ) -> Answer:
        """Relay the backend's response; report the attempt to the pool exactly once."""
        fill = ex.fill
        try:
            if self.cache is not None and not conn.upgraded:
                # the cache sees the head first (purge orders, what to store); with a stale
                # entry it may answer instead of a backend error (stale-if-error)
                instead = self.cache.on_head(conn, fill)
                if instead is not None:
                    conn.abort()
                    self.pool.finish(backend, outcome, status=conn.status, client=ex.client_key)
                    return instead
            if conn.upgraded:
                outcome = await tunnel(ex.request, ex.client, conn, ex.answer_headers)
                keep = False
            else:
                failure, keep = await relay(
                    ex.request,
                    ex.client,
                    conn,
                    ex.answer_headers,
                    idle_timeout=self.options.idle_timeout,
                    draining=self.draining,
                    tee=None if fill is None else fill.feed,  # the cache's copy of the body
                )
                if fill is not None:
                    fill.finish(failure is None)
                outcome = failure or outcome
        except BaseException:  # cancelled, or a bug: the attempt still ends exactly once
            conn.abort()
            self.pool.finish(backend, Outcome.CANCELLED)
            raise
        if conn.reusable():
            self.upstream.pool(backend.name, backend.url.host, backend.url.port).release(conn)
        elif not conn.closed:
            conn.abort()
        self.pool.finish(backend, outcome, status=conn.status, client=ex.client_key)
        return (101 if conn.upgraded else conn.status), backend.name, keep
