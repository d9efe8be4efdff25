"""The proxy handler: admit, pick a backend, stream both ways, classify failures, retry, report."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from typing import Final, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from lb import headers as h
from lb.admission.service import Admission
from lb.config import Settings
from lb.errors import (
    BadGateway,
    BadRequest,
    BodyTooLarge,
    GatewayTimeout,
    HeadersTooLarge,
    LbError,
    NoBackend,
    RequestTimeout,
    error_response,
)
from lb.identity import Client, ClientResolver
from lb.metrics import NO_BACKEND, Metrics
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
access_log = logging.getLogger("lb.access")

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
REPLAYABLE_BODY: Final = 64 * 1024  # bodies up to this size are buffered, so retries may resend


class ClientGone(BadRequest):
    """The client went away while we were reading its request body."""

    default_detail = "The request body ended early."


class CoalescedResponse(web.StreamResponse):
    """A streamed response whose head waits for the first body bytes (sent in one write)."""

    _send_headers_immediately = False


class _Failed(Exception):
    """One attempt failed before a response head arrived."""

    def __init__(self, outcome: Outcome, reached: bool, error: LbError) -> None:
        self.outcome, self.reached, self.error = outcome, reached, error


class Proxy:
    """Handles every request of the public listener (aiohttp low-level handler)."""

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
        websockets: WebSocketRelay | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.upstream = upstream
        self.admission = admission
        self.metrics = metrics
        self.resolver = resolver
        self.rng = rng
        self.loop = loop
        self.websockets = websockets
        self.draining = False
        self.in_flight = 0
        self.answered: dict[str, int] = {}  # responses by backend name (or "none")
        self._idle_empty: asyncio.Event = asyncio.Event()
        self._idle_empty.set()
        self._access = settings.access_log and access_log.isEnabledFor(logging.INFO)

    # -- entry -------------------------------------------------------------------------------

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = self.loop
        started = loop.time()
        self.in_flight += 1
        self._idle_empty.clear()
        gauge = self.metrics.in_flight
        gauge.inc()
        rid = h.request_id(request.headers.get(h.X_REQUEST_ID), self.rng)
        backend_name = NO_BACKEND
        status = 500
        resp: web.StreamResponse | None = None
        try:
            try:
                resp, backend_name = await self._handle(request, rid)
            except LbError as exc:
                # an unread request body would otherwise be read and discarded first
                unread = request.body_exists and not request.content.is_eof()
                resp = self._error(exc, ((h.X_REQUEST_ID, rid),), close=unread)
            status = resp.status
            if self.draining:
                resp.force_close()
            return resp
        finally:
            gauge.dec()
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle_empty.set()
            self.metrics.observe(backend_name, status, loop.time() - started)
            answered = self.answered
            answered[backend_name] = answered.get(backend_name, 0) + 1
            if self._access:
                access_log.info(
                    '%s %s "%s %s" %d %s %.1fms',
                    rid,
                    request.remote,
                    request.method,
                    request.path,
                    status,
                    backend_name,
                    (loop.time() - started) * 1000,
                )

    def protocol_error(self, status: int, code: str) -> None:
        """Count an answer the HTTP layer wrote for a request that never reached us."""
        self.metrics.lb_error(code)
        self.metrics.observe(NO_BACKEND, status, 0.0)
        self.answered[NO_BACKEND] = self.answered.get(NO_BACKEND, 0) + 1

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle_empty.wait()

    def _error(
        self, exc: LbError, headers: Iterable[tuple[str, str]] = (), *, close: bool = False
    ) -> web.Response:
        self.metrics.lb_error(exc.code)
        return error_response(exc, headers, close=close or self.draining)

    # -- one request -------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest, rid: str) -> tuple[web.StreamResponse, str]:
        settings = self.settings
        raw = request.raw_headers
        if h.raw_header_bytes(raw) > settings.max_header_bytes:
            raise HeadersTooLarge(
                f"Request headers exceed {settings.max_header_bytes} bytes (LB_MAX_HEADER_BYTES)."
            )
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise BodyTooLarge(
                f"Request body of {length} bytes exceeds {settings.max_body_bytes} bytes "
                "(LB_MAX_BODY_BYTES)."
            )
        hdrs = request.headers
        peer = request.remote or ""
        xff = hdrs.get(h.X_FORWARDED_FOR)
        client = self.resolver.resolve(peer, xff)
        answer_headers: tuple[tuple[str, str], ...] = ((h.X_REQUEST_ID, rid),)
        if self.admission is not None:
            verdict = await self.admission.check(request.method, request.path, client.key)
            if verdict.headers:
                answer_headers = (*answer_headers, *verdict.headers)
            if not verdict.allowed:
                self.metrics.lb_error(verdict.code)
                rejected = LbError(verdict.detail, status=verdict.status, code=verdict.code)
                resp = error_response(rejected, answer_headers)
                return resp, NO_BACKEND
        upstream_extra = (
            (h.X_FORWARDED_FOR, h.forwarded_for(peer, xff, client.via_trusted_proxy)),
            (
                h.X_FORWARDED_PROTO,
                h.forwarded_proto(hdrs.get(h.X_FORWARDED_PROTO), client.via_trusted_proxy),
            ),
            (h.X_REAL_IP, client.ip),
            (h.X_REQUEST_ID, rid),
        )
        if self.websockets is not None and hdrs.get("Upgrade", "").lower() == "websocket":
            return await self.websockets.relay(request, upstream_extra, answer_headers)
        try:
            return await self._forward(request, client, upstream_extra, answer_headers)
        except LbError as exc:
            exc.headers = (*exc.headers, *answer_headers[1:])
            raise

    async def _forward(
        self,
        request: web.BaseRequest,
        client: Client,
        upstream_extra: tuple[tuple[str, str], ...],
        answer_headers: tuple[tuple[str, str], ...],
    ) -> tuple[web.StreamResponse, str]:
        settings = self.settings
        pool = self.pool
        loop = self.loop
        method = request.method
        deadline = loop.time() + settings.request_deadline
        has_body = request.body_exists
        length = request.content_length
        chunked = has_body and length is None
        head = h.upstream_head(
            method,
            request.raw_path,
            request.raw_headers,
            extra=upstream_extra,
            content_length=length,
            chunked=chunked,
            default_host="",
        )
        if has_body and request.headers.get("Expect", "").lower() == "100-continue":
            transport = request.transport
            if transport is not None:
                transport.write(CONTINUE)
        if has_body and length is not None and length <= REPLAYABLE_BODY:
            # small bodies are read first: they go out with the head in one write, and a
            # retry can send them again
            head += await self._read_small_body(request, length)
            has_body = False
        tried: list[Backend] = []
        retries = 0
        body_touched = False
        last: _Failed | None = None
        pending: Backend | None = None  # already picked for the next attempt
        while True:
            backend = pending or (pool.pick(tried) if tried else pool.pick())
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
            try:
                try:
                    conn = cpool.take_idle()
                    if conn is None:
                        async with asyncio.timeout(
                            min(settings.connect_timeout, deadline - loop.time())
                        ):
                            conn = await cpool.connect()
                    conn.begin(head_only=method == "HEAD")
                    conn.write(head)
                    if has_body:
                        body_touched = True
                        await self._send_body(request, conn, chunked, deadline)
                    async with asyncio.timeout(
                        min(settings.first_byte_timeout, deadline - loop.time())
                    ):
                        await conn.read_head()
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
            except (LbError, asyncio.CancelledError):
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
                return await self._respond(request, conn, cpool, backend, outcome, answer_headers)
            finally:
                if budgeted:
                    pool.retry_budget.release()

    def _may_retry(
        self,
        request: web.BaseRequest,
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
        has_key = h.IDEMPOTENCY_KEY in request.headers
        if not policy.may_retry(request.method, has_key, outcome, reached):
            return False
        if len(pool.backends) < 2:
            return False
        return pool.retry_budget.try_acquire()

    async def _read_small_body(self, request: web.BaseRequest, length: int) -> bytes:
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                body = await request.content.readexactly(length)
        except TimeoutError:
            raise RequestTimeout() from None
        except RequestPayloadError as exc:
            raise BadRequest(f"Malformed request body: {exc}") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise ClientGone(str(exc)) from None
        return body

    async def _send_body(
        self, request: web.BaseRequest, conn: UpstreamConnection, chunked: bool, deadline: float
    ) -> None:
        """Stream the client's body to the backend, enforcing the size limit and idle timeout."""
        loop = self.loop
        limit = self.settings.max_body_bytes
        idle = self.settings.idle_timeout
        content = request.content
        sent = 0
        reading = True
        try:
            async with asyncio.timeout(idle) as timer:
                while True:
                    reading = True
                    chunk = await content.readany()
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
        except RequestPayloadError as exc:
            raise BadRequest(f"Malformed request body: {exc}") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise ClientGone(str(exc)) from None

    async def _respond(
        self,
        request: web.BaseRequest,
        conn: UpstreamConnection,
        cpool: ConnectionPool,
        backend: Backend,
        outcome: Outcome,
        answer_headers: tuple[tuple[str, str], ...],
    ) -> tuple[web.StreamResponse, str]:
        """Stream the backend's response to the client; report the attempt to the pool."""
        headers = h.downstream_headers(conn.headers)
        for name, value in answer_headers:
            headers[name] = value
        # with body bytes at hand, the head leaves together with them (one write, one packet);
        # otherwise (a slow stream) the head goes out at once
        factory = CoalescedResponse if conn.has_body_data() else web.StreamResponse
        resp = factory(status=conn.status, reason=conn.reason or None, headers=headers)
        if self.draining:
            resp.force_close()
        loop = self.loop
        idle = self.settings.idle_timeout
        writing = False
        try:
            await resp.prepare(request)
            if conn.complete:
                writing = True
                await resp.write_eof(conn.take_body())
                return self._finish(conn, cpool, backend, outcome, resp)
            async with asyncio.timeout(idle) as timer:
                while True:
                    writing = False
                    chunk = await conn.read_chunk()
                    if not chunk:
                        break
                    writing = True
                    await resp.write(chunk)
                    timer.reschedule(loop.time() + idle)
            await resp.write_eof()
        except TimeoutError:
            outcome = Outcome.CANCELLED if writing else Outcome.TIMEOUT
            self._abort_client(request)
        except UpstreamError:
            outcome = Outcome.RESET
            self._abort_client(request)
        except ConnectionError:
            # the client went away: aiohttp notices too and drops the connection
            outcome = Outcome.CANCELLED
            conn.abort()
        except BaseException:  # cancelled, or a bug: the attempt still ends exactly once
            conn.abort()
            self.pool.finish(backend, Outcome.CANCELLED)
            raise
        return self._finish(conn, cpool, backend, outcome, resp)

    def _finish(
        self,
        conn: UpstreamConnection,
        cpool: ConnectionPool,
        backend: Backend,
        outcome: Outcome,
        resp: web.StreamResponse,
    ) -> tuple[web.StreamResponse, str]:
        if conn.reusable():
            cpool.release(conn)
        elif not conn.closed:
            conn.abort()
        self.pool.finish(backend, outcome)
        return resp, backend.name

    @staticmethod
    def _abort_client(request: web.BaseRequest) -> None:
        """A response cut short must look cut short: drop the client connection."""
        transport = request.transport
        if transport is not None:
            transport.abort()


class WebSocketRelay(Protocol):
    async def relay(
        self,
        request: web.BaseRequest,
        upstream_extra: tuple[tuple[str, str], ...],
        answer_headers: tuple[tuple[str, str], ...],
    ) -> tuple[web.StreamResponse, str]: ...
