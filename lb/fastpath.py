"""The fast path: a bodiless request answered by callbacks, without a coroutine.

Most requests on sale day are small GETs whose answer arrives in one read. The proxy's
coroutine path (lb/proxy.py) costs them a task, two wake-ups and a dozen awaits. `take()`
runs the same steps, in the same order, as plain calls: request id, client identity,
admission (in-process buckets), the forwarding headers, a slot under a backend's adaptive
limit, an idle kept-alive connection; it writes the request and returns. The answer comes
back as a callback (`UpstreamConnection.listen`): a complete one is relayed in one write and
the attempt reported there and then, as `Proxy._respond` would.

Nothing is done twice. A request the fast path cannot start (a body, an upgrade, the
micro-cache, Redis buckets, draining) goes to the coroutine path untouched. One it has
started continues there from where it stands: no free slot (the admitter's bounded wait) or
no idle connection -> `Proxy.attempts()` with what is decided; an answer that is not whole
(a streamed body, a 5xx that may be retried, an error, a timeout, a dead connection) ->
`Proxy.attempts()` with the attempt made, which relays or retries it as it would its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from lb import headers as h
from lb.attempt import Exchange, fresh, resend_fresh, settle, start
from lb.errors import LbError, render_error
from lb.http.connection import ClientConnection
from lb.http.request import Request
from lb.http.upstream import UpstreamConnection, UpstreamError
from lb.metrics import NO_BACKEND
from lb.relay import answer_head, send_whole
from lb.upload import exchange
from lb.upstream.backend import Backend, Outcome, classify_status

if TYPE_CHECKING:
    from lb.proxy import Answer, Proxy

log = logging.getLogger("lb.fastpath")


class _InFlight:
    """One fast-path request waiting for its backend's answer."""

    __slots__ = ("backend", "conn", "ex", "rid", "started")

    def __init__(
        self, ex: Exchange, rid: str, started: float, backend: Backend, conn: UpstreamConnection
    ) -> None:
        self.ex, self.rid, self.started, self.backend, self.conn = ex, rid, started, backend, conn


class FastPath:
    """`take()` for the public listener (lb/server.py), in front of the proxy's handler."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.taken = 0  # requests started here
        self.relayed = 0  # ... of which answered whole by the callback

    def take(self, request: Request, client: ClientConnection) -> bool:
        """Start answering `request` without a coroutine; False leaves it, untouched, to
        the coroutine path."""
        proxy = self.proxy
        if request.body is not None or request.upgrade or proxy.draining:
            return False
        cache, admission = proxy.cache, proxy.admission
        if cache is not None and cache.wants(request):
            return False
        if admission is not None and not admission.synchronous:
            return False
        self.taken += 1
        started = proxy.ledger.begin()
        rid = h.request_id(request.header(b"x-request-id"), proxy.rng)
        try:
            self._start(request, client, rid, started)
        except LbError as exc:  # a refusal: answered at once
            keep = proxy.send_error(request, client, exc, rid)
            proxy.ledger.account(request, rid, started, exc.status, NO_BACKEND)
            client.done(request, keep and not proxy.draining)
        except Exception:  # a bug: the same 500 the coroutine path's task would write
            log.exception("request handler failed")
            if not client.response_started and not client.closed:
                client.write(render_error(LbError(), ((h.X_REQUEST_ID, rid),), close=True))
            proxy.ledger.account(request, rid, started, 500, NO_BACKEND)
            client.done(request, False)
        return True

    def _start(self, request: Request, client: ClientConnection, rid: str, started: float) -> None:
        proxy = self.proxy
        xff = request.header(b"x-forwarded-for")
        who = proxy.resolver.resolve(request.peer, xff)
        answer_headers: tuple[tuple[str, str], ...] = ((h.X_REQUEST_ID, rid),)
        admission = proxy.admission
        if admission is not None:
            verdict = admission.check_now(request.method, request.path, who.key)
            assert verdict is not None  # (`synchronous` said so)
            answer_headers = (*answer_headers, *verdict.headers)
            if not verdict.allowed:
                error = LbError(verdict.detail, status=verdict.status, code=verdict.code)
                error.headers = (*error.headers, *answer_headers[1:])
                raise error
        proto = request.header(b"x-forwarded-proto")
        upstream_extra = h.forwarding(request.peer, xff, proto, who, rid)
        ex = exchange(
            request, client, proxy.options, upstream_extra, answer_headers, who.key, None,
            started, None, False,
        )  # fmt: skip
        admitter = proxy.admitter
        if admitter is not None:
            backend = admitter.try_acquire(admitter.classify(request.method, request.path))
        else:
            backend = proxy.pool.pick()
        if backend is None:  # a wait for a slot, or no backend at all: the admitter says
            self._hand_over(ex, rid, started, proxy.attempts(ex))
            return
        conns = proxy.upstream.pool(backend.name, backend.url.host, backend.url.port)
        conn = conns.take_idle()
        if conn is None:  # a new connection: awaited in the coroutine path
            self._hand_over(ex, rid, started, proxy.attempts(ex, backend))
            return
        flight = _InFlight(ex, rid, started, backend, conn)
        ex.measure = admitter is not None and admitter.measures(backend)
        try:
            start(conn, ex)
        except UpstreamError:
            self._resume(flight)  # closed under us: resent on a fresh connection there
            return
        within = min(proxy.options.timeouts.first_byte, ex.deadline - proxy.loop.time())
        conn.listen(lambda: self._answered(flight), within)

    def _answered(self, flight: _InFlight) -> None:
        """The connection has news: a whole answer is relayed here, the rest resumed."""
        conn = flight.conn
        if not conn.head_done or not conn.complete or conn.upgraded or conn.error is not None:
            self._resume(flight)
            return
        outcome = classify_status(conn.status)
        if outcome is Outcome.SERVER_ERROR:
            self._resume(flight)  # another backend may get a go
            return
        proxy, ex, backend = self.proxy, flight.ex, flight.backend
        request, client = ex.request, ex.client
        if proxy.admitter is not None:
            proxy.admitter.observe(backend, conn)
        try:
            if proxy.cache is not None:
                proxy.cache.on_head(conn, None)  # the backend's purge orders
            head, how, keep = answer_head(request, conn, ex.answer_headers, proxy.draining)
            try:
                send_whole(client, conn, head, how == "chunked")
            except ConnectionError:
                outcome, keep = Outcome.CANCELLED, False  # the client went away
            if conn.reusable():
                proxy.upstream.pool(backend.name, backend.url.host, backend.url.port).release(conn)
            elif not conn.closed:
                conn.abort()
            proxy.pool.finish(backend, outcome, status=conn.status, client=ex.client_key)
        except Exception:  # a bug: the attempt still ends exactly once, the client is cut
            log.exception("relaying an answer failed")
            conn.abort()
            proxy.pool.finish(backend, Outcome.CANCELLED)
            client.abort()
            proxy.ledger.account(request, flight.rid, flight.started, 500, backend.name)
            client.done(request, False)
            return
        self.relayed += 1
        proxy.ledger.account(request, flight.rid, flight.started, conn.status, backend.name)
        client.done(request, keep and not proxy.draining)

    def _resume(self, flight: _InFlight) -> None:
        self._hand_over(flight.ex, flight.rid, flight.started, self._resumed(flight))

    async def _resumed(self, flight: _InFlight) -> Answer:
        """The attempt from where it stands: its connection has news that is not a whole
        answer (a streamed body, a 5xx, an error, a timeout, a connection that died)."""
        proxy, ex, backend = self.proxy, flight.ex, flight.backend
        try:
            result = settle(flight.conn)
            # a kept-alive connection that died unanswered: the request goes again, fresh
            if resend_fresh(result, flight.conn, ex):
                conns = proxy.upstream.pool(backend.name, backend.url.host, backend.url.port)
                result = await fresh(conns, ex, proxy.options.timeouts)
        except BaseException:
            proxy.pool.finish(backend, Outcome.CANCELLED)
            raise
        if proxy.admitter is not None and isinstance(result, UpstreamConnection):
            proxy.admitter.observe(backend, result)
        return await proxy.attempts(ex, backend, result)

    def _hand_over(self, ex: Exchange, rid: str, started: float, work: Awaitable[Answer]) -> None:
        request, client = ex.request, ex.client
        client.hand_over(request, self.proxy.run(request, client, rid, started, work))
