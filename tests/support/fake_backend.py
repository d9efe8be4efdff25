"""A scriptable HTTP backend for lb tests: echoes requests, and misbehaves on request.

    python -m tests.support.fake_backend --port P --name NAME [--record FILE]

Every request but /healthz and /_control/* is answered with a JSON echo after its body
was read (streamed and counted, never buffered whole), and appended to --record as one
line "METHOD PATH X-Request-ID" (flushed) before the query flags act:
?sleep=S, ?status=N, ?size=N (stream an N-byte chunked body), ?exit=1 (die mid-request),
?reset=1 (abort the connection without an answer). GET /ws is a WebSocket echo.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
from collections import Counter
from typing import IO

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024


class State:
    def __init__(self, name: str, record: IO[str] | None) -> None:
        self.name = name
        self.record = record
        self.health_status = 200
        self.requests = 0
        self.by_path: Counter[str] = Counter()


STATE: web.AppKey[State] = web.AppKey("state", State)


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {"ok": state.health_status < 400, "backend": state.name}, status=state.health_status
    )


async def control_health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.health_status = int(request.query.get("status", "200"))
    return web.json_response({"health_status": state.health_status})


async def control_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {"name": state.name, "requests": state.requests, "by_path": dict(state.by_path)}
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return await echo(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def echo(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body_bytes = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        body_bytes += len(chunk)
    state.requests += 1
    state.by_path[request.path] += 1
    if state.record is not None:
        rid = request.headers.get("X-Request-ID", "-")
        state.record.write(f"{request.method} {request.path} {rid}\n")
        state.record.flush()
    query = request.query
    if query.get("exit") == "1":
        os._exit(1)
    if query.get("reset") == "1":
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # RST instead of FIN: linger 0
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            transport.abort()
        return web.Response(status=599)
    if "sleep" in query:
        await asyncio.sleep(float(query["sleep"]))
    status = int(query.get("status", "200"))
    if "size" in query:
        size = int(query["size"])
        resp = web.StreamResponse(status=status, headers={"X-Backend": state.name})
        resp.content_type = "application/octet-stream"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b"x" * CHUNK
        left = size
        while left > 0:
            n = min(CHUNK, left)
            await resp.write(block if n == CHUNK else block[:n])
            left -= n
        await resp.write_eof()
        return resp
    payload = {
        "backend": state.name,
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "headers": {k: v for k, v in request.headers.items()},
        "body_bytes": body_bytes,
    }
    return web.Response(
        status=status,
        text=json.dumps(payload),
        content_type="application/json",
        headers={"X-Backend": state.name},
    )


def build_app(name: str, record: IO[str] | None = None) -> web.Application:
    app = web.Application(client_max_size=1 << 40)
    app[STATE] = State(name, record)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/_control/health", control_health)
    app.router.add_get("/_control/stats", control_stats)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--record")
    args = parser.parse_args()
    record = open(args.record, "a", encoding="utf-8") if args.record else None  # noqa: SIM115
    web.run_app(
        build_app(args.name, record),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        reuse_address=True,
    )


if __name__ == "__main__":
    main()
