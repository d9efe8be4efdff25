"""The proxy handler: admit, pick a backend, stream both ways, classify failures, retry, report."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Final

from lb import headers as h
from lb.accesslog import AccessLog
from lb.admission.service import Admission
from lb.cache.edge import EdgeCache, Fill
from lb.config import Settings
from lb.errors import (
    BadGateway,
    BadRequest,
    BodyTooLarge,
    GatewayTimeout,
    LbError,
    NoBackend,
    Overloaded,
    RequestTimeout,
    render_error,
)
from lb.http.connection import ClientConnection
from lb.http.request import BodyError, Request
from lb.identity import ClientResolver
from lb.metrics import NO_BACKEND, Metrics
from lb.overload import Admitter
from lb.relay import relay, tunnel
from lb.upstream.backend import Backend, Outcome, classify_status
from lb.upstream.connection import (
    ConnectFailed,
    ConnectionPool,
    UpstreamClient,
    UpstreamConnection,
    UpstreamError,
)
from lb.upstream.pool import Pool

log = logging.getLogger("lb.proxy")

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
REPLAYABLE_BODY: Final = 64 * 1024  # bodies up to this size are buffered, so retries may resend
CLIENT_GONE: Final = 499  # nginx's status for "the client closed the connection first"

Answer = tuple[int, str, bool]  # status sent, backend name (or "none"), keep the connection


class ClientGone(BadRequest):
    """The client went away while we were reading its request body."""

    default_detail = "The request body ended early."


class _Failed(Exception):
    """One attempt failed before a response head arrived."""

    def __init__(self, outcome: Outcome, reached: bool, error: LbError) -> None:
        self.outcome, self.reached, self.error = outcome, reached, error


class Proxy:
    """Handles every request of the public listener."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool: Pool,
        upstream: UpstreamClient,
        admission: Admission | None,
        metrics: Metrics,
        resolver: ClientResolver,
        rng: random.Random,
        loop: asyncio.AbstractEventLoop,
        cache: EdgeCache | None = None,
        admitter: Admitter | None = None,
    ) -> None:
        self.cache = cache  # issue 10: the micro-cache (lb/cache/); None when LB_CACHE_BYTES=0
        self.admitter = admitter  # overload control (lb/overload.py)
        self.settings = settings
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
        self._idle_empty: asyncio.Event = asyncio.Event()
        self._idle_empty.set()
        self.access_log = AccessLog() if settings.access_log else None

    # -- entry -------------------------------------------------------------------------------

    async def __call__(self, request: Request, client: ClientConnection) -> bool:
        """Answer `request` on `client`; True when the connection may carry another one."""
        loop = self.loop
        started = loop.time()
        self.in_flight += 1
        self._idle_empty.clear()
        gauge = self.metrics.in_flight
        gauge.inc()
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
            gauge.dec()
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle_empty.set()
            self.metrics.observe(backend_name, status, loop.time() - started)
            answered = self.answered
            answered[backend_name] = answered.get(backend_name, 0) + 1
            if self.access_log is not None:
                self.access_log.line(
                    rid,
                    request.peer,
                    request.method,
                    request.path,
                    status,
                    backend_name,
                    (loop.time() - started) * 1000,
                )
        return keep and not self.draining

    def protocol_error(self, error: LbError) -> None:
        """Count an answer the HTTP layer wrote for a request that never reached us."""
        self.metrics.lb_error(error.code)
        self.metrics.observe(NO_BACKEND, error.status, 0.0)
        self.answered[NO_BACKEND] = self.answered.get(NO_BACKEND, 0) + 1

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle_empty.wait()

    def _send_error(
        self,
        request: Request,
        client: ClientConnection,
        error: LbError,
        rid: str,
        extra: tuple[tuple[str, str], ...] = (),
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
            ((h.X_REQUEST_ID, rid), *extra),
            close=close,
            head_only=request.method == "HEAD",
            accept=request.header(b"accept"),
        )
        try:
            client.write(data)
        except ConnectionError:
            return False
        return not close

    # -- one request -------------------------------------------------------------------------

    async def _handle(self, request: Request, client: ClientConnection, rid: str) -> Answer:
        settings = self.settings
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise BodyTooLarge(
                f"Request body of {length} bytes exceeds {settings.max_body_bytes} bytes "
                "(LB_MAX_BODY_BYTES)."
            )
        peer = request.peer
        xff = request.header(b"x-forwarded-for")
        who = self.resolver.resolve(peer, xff)
        answer_headers: tuple[tuple[str, str], ...] = ((h.X_REQUEST_ID, rid),)
        if self.admission is not None:
            verdict = await self.admission.check(request.method, request.path, who.key)
            if verdict.headers:
                answer_headers = (*answer_headers, *verdict.headers)
            if not verdict.allowed:
                rejected = LbError(verdict.detail, status=verdict.status, code=verdict.code)
                keep = self._send_error(request, client, rejected, rid, answer_headers[1:])
                return rejected.status, NO_BACKEND, keep
        upstream_extra = (
            (h.X_FORWARDED_FOR, h.forwarded_for(peer, xff, who.via_trusted_proxy)),
            (
                h.X_FORWARDED_PROTO,
                h.forwarded_proto(request.header(b"x-forwarded-proto"), who.via_trusted_proxy),
            ),
            (h.X_REAL_IP, who.ip),
            (h.X_REQUEST_ID, rid),
        )
        try:
            # issue 10: after admission (as nginx's limit_req runs before its cache: admission
            # is fairness between clients, whatever answers), GET/HEAD go through the cache,
            # which answers from memory or calls _forward with a Fill
            if self.cache is not None and self.cache.wants(request):
                return await self.cache.handle(
                    request,
                    client,
                    answer_headers,
                    upstream_extra[1][1],  # the scheme, X-Forwarded-Proto
                    lambda req, to, fill: self._forward(
                        req, to, upstream_extra, answer_headers, fill
                    ),
                    draining=self.draining,
                )
            return await self._forward(request, client, upstream_extra, answer_headers)
        except LbError as exc:
            exc.headers = (*exc.headers, *answer_headers[1:])
            raise

    async def _forward(
        self,
        request: Request,
        client: ClientConnection,
        upstream_extra: tuple[tuple[str, str], ...],
        answer_headers: tuple[tuple[str, str], ...],
        fill: Fill | None = None,  # issue 10: the cache's capture of this answer
    ) -> Answer:
        settings = self.settings
        pool = self.pool
        loop = self.loop
        method = request.method
        deadline = loop.time() + settings.request_deadline
        body = request.body
        length = request.content_length
        websocket = request.upgrade and (request.header(b"upgrade") or "").lower() == "websocket"
        head = h.upstream_head(
            method,
            request.target,
            request.raw_headers,
            extra=upstream_extra,
            content_length=length,
            chunked=request.chunked,
            default_host="",
            keep_upgrade=websocket,
            scan_connection=b"connection" in request.headers,
        )
        if body is not None and (request.header(b"expect") or "").lower() == "100-continue":
            client.write(CONTINUE)
            client.response_started = False  # an interim answer: the real one is still owed
        if body is not None and length is not None and length <= REPLAYABLE_BODY:
            # small bodies are read first: they go out with the head in one write, and a
            # retry can send them again
            head += await self._read_small_body(request, length)
            body = None
        tried: list[Backend] = []
        retries = 0
        body_touched = False
        last: _Failed | None = None
        pending: Backend | None = None  # already picked for the next attempt
        # OVERLOAD (issue 14): the request's shedding class, once per request
        klass = self.admitter.classify(method, request.path) if self.admitter else ""
        while True:
            # OVERLOAD: a slot under the backend's adaptive limit, a bounded wait for one,
            # or Overloaded (503). The slot is the pool's pick: pool.finish() frees it.
            backend: Backend | None
            try:
                if pending is not None:
                    backend = pending
                elif self.admitter is not None:
                    backend = await self.admitter.acquire(klass, tried)
                else:
                    backend = pool.pick(tried) if tried else pool.pick()
            except Overloaded:
                if retries > 0:
                    pool.retry_budget.release()  # the retry granted could not start
                raise
            pending = None
            if backend is None:
                if retries > 0:
                    pool.retry_budget.release()  # the retry granted could not start
                if last is not None:
                    raise last.error
                raise NoBackend()
            tried.append(backend)
            budgeted = retries > 0
            conn: UpstreamConnection | None = None
            cpool = self.upstream.pool(backend.name, backend.url.host, backend.url.port)
            sent_at = loop.time()  # OVERLOAD: the backend's latency excludes the lb's queue
            try:
                try:
                    conn = None if websocket else cpool.take_idle()
                    if conn is None:
                        async with asyncio.timeout(
                            min(settings.connect_timeout, deadline - loop.time())
                        ):
                            conn = await cpool.connect()
                    conn.begin(head_only=method == "HEAD")
                    conn.write(head)
                    if body is not None:
                        body_touched = True
                        await self._send_body(request, conn, deadline)
                    await conn.read_head(min(settings.first_byte_timeout, deadline - loop.time()))
                    if self.admitter is not None:  # OVERLOAD: one latency sample per answer
                        self.admitter.sample(backend, loop.time() - sent_at)
                except ConnectFailed as exc:
                    raise _Failed(
                        Outcome.CONNECT_FAILURE, False, BadGateway(f"Backend unreachable: {exc}")
                    ) from None
                except TimeoutError:
                    if conn is None:
                        raise _Failed(
                            Outcome.CONNECT_FAILURE,
                            False,
                            BadGateway("Connecting to the backend timed out."),
                        ) from None
                    raise _Failed(Outcome.TIMEOUT, True, GatewayTimeout()) from None
                except UpstreamError as exc:
                    raise _Failed(
                        Outcome.RESET, exc.reached, BadGateway(f"Backend failed: {exc}")
                    ) from None
            except _Failed as failed:
                if conn is not None:
                    conn.abort()
                pool.finish(backend, failed.outcome)
                if budgeted:
                    pool.retry_budget.release()
                last = failed
                if self._may_retry(request, failed.outcome, failed.reached, retries, body_touched):
                    retries += 1
                    self.metrics.retry(failed.outcome.value)
                    continue
                raise failed.error from None
            except BaseException:  # the client's fault or gone, or cancelled
                if conn is not None:
                    conn.abort()
                pool.finish(backend, Outcome.CANCELLED)
                if budgeted:
                    pool.retry_budget.release()
                raise
            # a response head arrived
            outcome = classify_status(conn.status)
            if outcome is Outcome.SERVER_ERROR and self._may_retry(
                request, outcome, True, retries, body_touched
            ):
                pending = pool.pick(tried)
                if pending is not None:
                    # another backend gets a go; this answer is dropped
                    conn.abort()
                    pool.finish(backend, outcome)
                    if budgeted:
                        pool.retry_budget.release()
                    retries += 1
                    self.metrics.retry(outcome.value)
                    last = _Failed(outcome, True, BadGateway("Backend answered with an error."))
                    continue
                # nowhere else to go: the backend's own answer is the best there is
                pool.retry_budget.release()
            try:
                return await self._respond(
                    request, client, conn, cpool, backend, outcome, answer_headers, fill
                )
            finally:
                if budgeted:
                    pool.retry_budget.release()

    def _may_retry(
        self,
        request: Request,
        outcome: Outcome,
        reached: bool,
        retries: int,
        body_touched: bool,
    ) -> bool:
        """May this failed attempt be re-sent? Takes a retry-budget permit when it may."""
        pool = self.pool
        policy = pool.retry_policy
        if not policy.allows_attempt(retries):
            return False
        # a streamed body cannot be sent twice: only a connect failure leaves it unread
        if body_touched and reached:
            return False
        has_key = b"idempotency-key" in request.headers
        if not policy.may_retry(request.method, has_key, outcome, reached):
            return False
        if len(pool.backends) < 2:
            return False
        return pool.retry_budget.try_acquire(reached)

    async def _read_small_body(self, request: Request, length: int) -> bytes:
        assert request.body is not None
        if request.body.eof:  # usually it came with the head: no waiting, no timer
            return await request.body.read_all(length)
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                return await request.body.read_all(length)
        except TimeoutError:
            raise RequestTimeout() from None
        except BodyError as exc:
            raise ClientGone(str(exc)) from None

    async def _send_body(self, request: Request, conn: UpstreamConnection, deadline: float) -> None:
        """Stream the client's body to the backend, enforcing the size limit and idle timeout."""
        assert request.body is not None
        body = request.body
        chunked = request.chunked
        loop = self.loop
        limit = self.settings.max_body_bytes
        idle = self.settings.idle_timeout
        sent = 0
        reading = True
        try:
            async with asyncio.timeout(idle) as timer:
                while True:
                    reading = True
                    chunk = await body.read()
                    if not chunk:
                        break
                    sent += len(chunk)
                    if sent > limit:
                        raise BodyTooLarge(
                            f"Request body exceeds {limit} bytes (LB_MAX_BODY_BYTES)."
                        )
                    if conn.head_done:
                        # the backend answered early (e.g. an error): stop sending
                        return
                    if chunked:
                        conn.writelines([b"%x\r\n" % len(chunk), chunk, b"\r\n"])
                    else:
                        conn.write(chunk)
                    reading = False
                    await conn.drain()
                    timer.reschedule(min(loop.time() + idle, deadline))
                if chunked:
                    conn.write(b"0\r\n\r\n")
        except TimeoutError:
            if reading:
                raise RequestTimeout() from None
            raise
        except BodyError as exc:
            raise ClientGone(str(exc)) from None

    async def _respond(
        self,
        request: Request,
        client: ClientConnection,
        conn: UpstreamConnection,
        cpool: ConnectionPool,
        backend: Backend,
        outcome: Outcome,
        answer_headers: tuple[tuple[str, str], ...],
        fill: Fill | None = None,
    ) -> Answer:
        """Relay the backend's response; report the attempt to the pool exactly once."""
        try:
            if self.cache is not None and not conn.upgraded:
                # issue 10: the cache sees the head first (purge orders, what to store); with
                # a stale entry it may answer instead of a backend error (stale-if-error)
                instead = self.cache.on_head(conn, fill)
                if instead is not None:
                    conn.abort()
                    self.pool.finish(backend, outcome)
                    return instead
            if conn.upgraded:
                outcome = await tunnel(request, client, conn, answer_headers)
                keep = False
            else:
                failure, keep = await relay(
                    request,
                    client,
                    conn,
                    answer_headers,
                    idle_timeout=self.settings.idle_timeout,
                    draining=self.draining,
                    tee=None if fill is None else fill.feed,  # issue 10: capture the body
                )
                if fill is not None:
                    fill.finish(failure is None)
                outcome = failure or outcome
        except BaseException:  # cancelled, or a bug: the attempt still ends exactly once
            conn.abort()
            self.pool.finish(backend, Outcome.CANCELLED)
            raise
        if conn.reusable():
            cpool.release(conn)
        elif not conn.closed:
            conn.abort()
        self.pool.finish(backend, outcome)
        return (101 if conn.upgraded else conn.status), backend.name, keep
