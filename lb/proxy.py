"""The proxy handler: admit, receive the body, try backends (retrying when allowed), relay, report.

Read top to bottom: `__call__` -> `run` (errors, the books: lb/ledger.py) -> `_handle` (size
check, identity, admission, forwarding headers, the cache) -> `_forward` (request buffering)
-> `attempts` (on backends until one answers or no retry is allowed) -> `_respond` (relay,
report the attempt once). A bodiless request usually takes lb/fastpath.py instead: the same
steps as callbacks, continuing here (`run`, `attempts`) from where it stands when it must wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from typing import Final

from lb import headers as h
from lb.admission.service import Admission
from lb.attempt import Exchange, Failed, attempt
from lb.cache.edge import EdgeCache, Fill
from lb.errors import BadGateway, LbError, NoBackend, render_error
from lb.http.connection import ClientConnection
from lb.http.request import BodyError, Request
from lb.http.spool import ClientGone
from lb.http.upstream import Upstream, UpstreamConnection
from lb.identity import ClientResolver
from lb.ledger import Ledger
from lb.metrics import NO_BACKEND, Metrics
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
        # in flight, answered, the access log (lb/ledger.py)
        self.ledger = Ledger(metrics, admission, loop, access_log=options.access_log)

    async def __call__(self, request: Request, client: ClientConnection) -> bool:
        """Answer `request` on `client`; True when the connection may carry another one."""
        started = self.ledger.begin()
        rid = h.request_id(request.header(b"x-request-id"), self.rng)
        return await self.run(request, client, rid, started, self._handle(request, client, rid))

    async def run(
        self,
        request: Request,
        client: ClientConnection,
        rid: str,
        started: float,
        work: Awaitable[Answer],
    ) -> bool:
        """Await the answer to `request`, answer the lb's errors, account for it once."""
        status, backend_name, keep = CLIENT_GONE, NO_BACKEND, False
        try:
            status, backend_name, keep = await work
        except ClientGone:
            client.close()  # gone, or already told off by the HTTP layer: nothing to answer
        except LbError as exc:
            status, keep = exc.status, self.send_error(request, client, exc, rid)
        except (ConnectionError, BodyError):
            pass  # the client went away: CLIENT_GONE, nothing to answer
        finally:
            self.ledger.account(request, rid, started, status, backend_name)
        return keep and not self.draining

    def send_error(
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
            return await self.attempts(exchange)
        finally:
            if buffered is not None:
                buffered.close()

    async def attempts(
        self,
        ex: Exchange,
        first: Backend | None = None,
        result: UpstreamConnection | Failed | None = None,
    ) -> Answer:
        """Attempts on backends until one answers, or no retry is allowed. `first`: a
        backend already picked (its slot taken), and `result`: its attempt, if made."""
        pool = self.pool
        tried: list[Backend] = []
        retries = 0
        last: Failed | None = None
        pending = first  # already picked for the next attempt
        admitter = self.admitter
        klass = admitter.classify(ex.request.method, ex.request.path) if admitter else ""
        while True:
            with pool.retry_budget.permit(held=retries > 0):
                if result is None:
                    if pending is None and admitter is not None:
                        # a slot under a backend's adaptive limit, a bounded wait for one,
                        # or Overloaded (503); the slot is the pool's pick: pool.finish()
                        # frees it
                        pending = await admitter.acquire(klass, tried)
                    backend = pending or pool.pick(tried)
                    pending = None
                    if backend is None:
                        raise last.error if last is not None else NoBackend()
                    result = await self._try(ex, backend)
                else:
                    backend, pending = first, None  # (the fast path's attempt)
                    assert backend is not None
                tried.append(backend)
                result, attempt_result = None, result
                if isinstance(attempt_result, UpstreamConnection):
                    answer = attempt_result
                    outcome = classify_status(answer.status)
                    if outcome is Outcome.SERVER_ERROR:
                        pending = pool.pick(tried)
                    if pending is None or not pool.may_retry(
                        ex.retry_key, outcome, True, retries, streamed=ex.streamed
                    ):
                        if pending is not None:
                            pool.finish(pending, Outcome.CANCELLED)  # not needed after all
                        return await self._respond(ex, answer, backend, outcome)
                    # another backend gets a go; this answer is dropped
                    answer.abort()
                    pool.finish(backend, outcome, status=answer.status, client=ex.client_key)
                    last = Failed(outcome, True, BadGateway("Backend answered with an error."))
                    retries += 1
                    self.metrics.retry(outcome.value)
                    continue
                pool.finish(backend, attempt_result.outcome)
                last = attempt_result
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
        admitter = self.admitter
        ex.measure = admitter is not None and admitter.measures(backend)
        try:
            result = await attempt(conns, ex, self.options.timeouts)
            if admitter is not None and isinstance(result, UpstreamConnection):
                admitter.observe(backend, result)
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
