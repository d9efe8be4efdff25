"""The admin listener: /healthz, /metrics, /status (JSON or HTML), drain and restore a backend,
the live backend set, and the admission policy (read, replace, reset, preview).

Reads are open; every write needs `Authorization: Bearer $LB_ADMIN_TOKEN` when the token is
set (the status page's forms send it as a `token` field instead), compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lb.admission.authority import PolicyAuthority
from lb.admission.distribution import PolicyUnavailable
from lb.admission.policy import Policy, PolicyError, updated
from lb.admission.preview import merge, replay
from lb.config import parse_backends
from lb.errors import json_error
from lb.status import StatusBoard, policy_view, render_html, render_policy_page

log = logging.getLogger("lb.admin")

READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
PREVIEW_MINUTES: Final = 5.0  # the default look-back of a preview (the record keeps 5 min)
ADMIN_USER: Final = "X-Admin-User"  # optional: who is making the change, for the audit line


class Control(Protocol):
    """What the admin listener reads and acts on: one process, or the master of several."""

    policy: PolicyAuthority

    @property
    def draining(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    async def drain(self, name: str) -> bool: ...

    async def restore(self, name: str) -> bool: ...

    async def set_backends(self, urls: list[str]) -> dict[str, Any]: ...

    async def arrivals(self, seconds: float) -> list[dict[str, Any]]: ...

    def metrics(self) -> bytes: ...


class LocalControl:
    """Admin of a single-process lb: reads and changes its runtime directly."""

    def __init__(self, runtime: Any, registry: CollectorRegistry) -> None:
        self.runtime = runtime
        self.registry = registry
        self.board = StatusBoard()
        self.policy: PolicyAuthority = runtime.policy

    @property
    def draining(self) -> bool:
        return bool(self.runtime.draining)

    def status(self) -> dict[str, Any]:
        return self.board.combine([self.runtime.snapshot()], draining=self.draining)

    async def drain(self, name: str) -> bool:
        return bool(self.runtime.pool.drain(name))

    async def restore(self, name: str) -> bool:
        return bool(self.runtime.pool.restore(name))

    async def set_backends(self, urls: list[str]) -> dict[str, Any]:
        added, removed = self.runtime.set_backends(parse_backends(",".join(urls)))
        return {"backends": sorted(urls), "added": added, "removed": removed, "applied": True}

    async def arrivals(self, seconds: float) -> list[dict[str, Any]]:
        return [self.runtime.admission.arrivals.since(seconds)]

    def metrics(self) -> bytes:
        self.runtime.metrics.sync(self.runtime.pool.snapshot())
        return generate_latest(self.registry)


CONTROL: web.AppKey[Control] = web.AppKey("control", Control)
TOKEN: web.AppKey[str] = web.AppKey("token", str)


def _authorized(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Writes need the admin token when one is set; reads never do."""
    token = request.app.get(TOKEN, "")
    if token and request.method not in READS:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" and _is_form(request):
            given = str((await request.post()).get("token", ""))
        elif scheme.lower() != "bearer":
            given = ""
        if not given or not _authorized(given.strip(), token):
            return json_error(
                401,
                "unauthorized",
                "Admin writes need 'Authorization: Bearer <LB_ADMIN_TOKEN>'.",
                (("WWW-Authenticate", 'Bearer realm="lb-admin"'),),
            )
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    if control.draining:
        return web.json_response({"ok": False, "draining": True}, status=503)
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[CONTROL].metrics()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


async def status(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    data = control.status()
    data["policy"] = policy_view(control.policy.policy, control.policy.scope, data)
    fmt = request.query.get("format")
    wants_html = fmt == "html" or (fmt is None and _wants_html(request))
    if wants_html:
        return web.Response(text=render_html(data), content_type="text/html")
    return web.Response(text=json.dumps(data, indent=1), content_type="application/json")


async def drain(request: web.Request) -> web.StreamResponse:
    return await _act(request, drained=True)


async def restore(request: web.Request) -> web.StreamResponse:
    return await _act(request, drained=False)


async def _act(request: web.Request, *, drained: bool) -> web.StreamResponse:
    control = request.app[CONTROL]
    name = request.match_info["name"]
    done = await (control.drain(name) if drained else control.restore(name))
    if not done:
        return json_error(404, "unknown_backend", f"No backend named {name!r}.")
    if _wants_html(request):
        raise web.HTTPSeeOther("/status")
    return web.json_response({"backend": name, "drained": drained})


# -- the live backend set ----------------------------------------------------------------------


async def put_backends(request: web.Request) -> web.Response:
    """`{"backends": ["http://10.0.0.5:8000", ...]}` replaces the set (discovery calls this)."""
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    urls = body.get("backends")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        return _invalid("backends", "expected a non-empty list of http://host:port URLs")
    try:
        canonical = [b.url for b in parse_backends(",".join(urls))]
    except ValueError:
        return _invalid("backends", "expected distinct http://host:port URLs")
    result = await request.app[CONTROL].set_backends(canonical)
    log.warning("audit: backends set by %s: %s", _who(request), ",".join(sorted(canonical)))
    return web.json_response(result)


# -- the admission policy ----------------------------------------------------------------------


def _who(request: web.Request) -> str:
    user = request.headers.get(ADMIN_USER, "").strip()[:64] or "admin"
    return f"{user}@{request.remote or 'unknown'}"


def _invalid(field: str, message: str) -> web.Response:
    return web.json_response(
        {"detail": f"{field}: {message}", "code": "invalid_field", "field": field}, status=400
    )


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object (or form fields), or the 400 that says why there is none."""
    if _is_form(request):
        form = await request.post()
        return {k: str(v) for k, v in form.items() if k != "token" and str(v) != ""}
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "bad_request", "The body must be a JSON object.")
    if not isinstance(body, dict):
        return json_error(400, "bad_request", "The body must be a JSON object.")
    return body


def _is_form(request: web.Request) -> bool:
    return request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


def _policy_json(control: Control, policy: Policy) -> dict[str, Any]:
    return {**policy.to_json(), "scope": control.policy.scope}


async def get_rules(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    view = policy_view(control.policy.policy, control.policy.scope, control.status())
    if request.query.get("format") == "html":
        return web.Response(text=render_policy_page(view), content_type="text/html")
    return web.json_response(view)


async def put_rules(request: web.Request) -> web.StreamResponse:
    control = request.app[CONTROL]
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    if _is_form(request):
        body.setdefault("dry_run", "0")  # an unticked checkbox sends nothing
    try:
        proposed = updated(control.policy.policy, body)
    except PolicyError as exc:
        return _invalid(exc.field, str(exc).split(": ", 1)[1])
    try:
        policy = await control.policy.set(proposed, by=_who(request))
    except PolicyUnavailable as exc:
        return json_error(
            503,
            "policy_store_unavailable",
            f"Redis holds the fleet's policy and cannot be reached ({exc}); nothing changed.",
            (("Retry-After", "1"),),
        )
    if _is_form(request):
        raise web.HTTPSeeOther("/admission/rules?format=html")
    return web.json_response(_policy_json(control, policy))


async def delete_rules(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    try:
        policy = await control.policy.reset(by=_who(request))
    except PolicyUnavailable as exc:
        return json_error(
            503, "policy_store_unavailable", f"Redis cannot be reached ({exc}); nothing changed."
        )
    return web.json_response(_policy_json(control, policy))


async def preview_rules(request: web.Request) -> web.Response:
    """What the proposed policy (fields left out: as in force) would have rejected lately."""
    control = request.app[CONTROL]
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    minutes = body.pop("minutes", PREVIEW_MINUTES)
    if isinstance(minutes, bool) or not isinstance(minutes, int | float | str):
        return _invalid("minutes", "expected a number of minutes between 0 and 5")
    try:
        window = float(minutes)
    except ValueError:
        return _invalid("minutes", "expected a number of minutes between 0 and 5")
    if not 0 < window <= PREVIEW_MINUTES:
        return _invalid("minutes", "expected a number of minutes between 0 and 5")
    try:
        proposed = updated(control.policy.policy, body)
    except PolicyError as exc:
        return _invalid(exc.field, str(exc).split(": ", 1)[1])
    arrivals = merge(await control.arrivals(window * 60))
    result = replay(arrivals, proposed)
    shape = proposed.to_json()
    return web.json_response(
        {
            "minutes": window,
            "proposed": {k: shape[k] for k in ("bucket_capacity", "leak_rate", "rules", "dry_run")},
            "in_force_version": control.policy.policy.version,
            **result,
        }
    )


def build_admin_app(control: Control, *, token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[require_token])
    app[CONTROL] = control
    app[TOKEN] = token or ""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_post("/backends/{name}/drain", drain)
    app.router.add_post("/backends/{name}/restore", restore)
    app.router.add_put("/backends", put_backends)
    app.router.add_get("/admission/rules", get_rules)
    app.router.add_put("/admission/rules", put_rules)
    app.router.add_post("/admission/rules", put_rules)  # the status page's form
    app.router.add_delete("/admission/rules", delete_rules)
    app.router.add_post("/admission/rules/preview", preview_rules)
    return app


async def start_admin(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
