"""A scriptable origin for the cache tests: per-path answers set over HTTP, hits counted.

    python -m tests.lb.cache.origin --port P

POST /_control/rule {"path": "/x", "status": 200, "headers": {...}, "sleep": 0.2, "size": 0}
sets how GET/HEAD/POST of /x are answered (a path ending in "*" is a prefix rule);
GET /_control/hits?path=/x says how often /x was asked (all methods). Answers are JSON:
{"path", "n" (this path's count), "seen" (the request's Vary-able headers)} padded to `size`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any

from aiohttp import web

RULES: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("rules", dict)
HITS: web.AppKey[Counter[str]] = web.AppKey("hits", Counter)
SEEN = ("accept-language", "authorization", "cookie")


def _rule(app: web.Application, path: str) -> dict[str, Any]:
    rules = app[RULES]
    if path in rules:
        return rules[path]
    for prefix, rule in rules.items():
        if prefix.endswith("*") and path.startswith(prefix[:-1]):
            return rule
    return {}


async def answer(request: web.Request) -> web.Response:
    app = request.app
    app[HITS][request.path] += 1
    await request.read()
    rule = _rule(app, request.path)
    if rule.get("sleep"):
        await asyncio.sleep(float(rule["sleep"]))
    payload: dict[str, Any] = {
        "path": request.path,
        "query": request.query_string,
        "n": app[HITS][request.path],
        "seen": {k: request.headers[k] for k in SEEN if k in request.headers},
    }
    body = json.dumps(payload)
    size = int(rule.get("size", 0))
    if size > len(body):
        payload["pad"] = "x" * (size - len(body) - 10)
        body = json.dumps(payload)
    return web.Response(
        status=int(rule.get("status", 200)),
        text=body,
        content_type="application/json",
        headers=rule.get("headers", {}),
    )


async def set_rule(request: web.Request) -> web.Response:
    rule = await request.json()
    request.app[RULES][rule.pop("path")] = rule
    return web.json_response({"ok": True})


async def hits(request: web.Request) -> web.Response:
    return web.json_response({"hits": request.app[HITS][request.query["path"]]})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build_app() -> web.Application:
    app = web.Application()
    app[RULES] = {}
    app[HITS] = Counter()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/_control/rule", set_rule)
    app.router.add_get("/_control/hits", hits)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
