"""The admin listener: /healthz, /metrics, /status (JSON or HTML), drain and restore a backend."""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lb.errors import json_error
from lb.status import StatusBoard, render_html


class Control(Protocol):
    """What the admin listener reads and acts on: one process, or the master of several."""

    @property
    def draining(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    async def drain(self, name: str) -> bool: ...

    async def restore(self, name: str) -> bool: ...

    def metrics(self) -> bytes: ...


class LocalControl:
    """Admin of a single-process lb: reads and changes its runtime directly."""

    def __init__(self, runtime: Any, registry: CollectorRegistry) -> None:
        self.runtime = runtime
        self.registry = registry
        self.board = StatusBoard()

    @property
    def draining(self) -> bool:
        return bool(self.runtime.draining)

    def status(self) -> dict[str, Any]:
        return self.board.combine([self.runtime.snapshot()], draining=self.draining)

    async def drain(self, name: str) -> bool:
        return bool(self.runtime.pool.drain(name))

    async def restore(self, name: str) -> bool:
        return bool(self.runtime.pool.restore(name))

    def metrics(self) -> bytes:
        self.runtime.metrics.sync(self.runtime.pool.snapshot())
        return generate_latest(self.registry)


CONTROL: web.AppKey[Control] = web.AppKey("control", Control)


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


async def status(request: web.Request) -> web.Response:
    data = request.app[CONTROL].status()
    fmt = request.query.get("format")
    wants_html = fmt == "html" or (fmt is None and "text/html" in request.headers.get("Accept", ""))
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
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPSeeOther("/status")
    return web.json_response({"backend": name, "drained": drained})


def build_admin_app(control: Control) -> web.Application:
    app = web.Application()
    app[CONTROL] = control
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_post("/backends/{name}/drain", drain)
    app.router.add_post("/backends/{name}/restore", restore)
    return app


async def start_admin(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
