"""A backend with a fixed capacity: N requests at a time, each taking a fixed service time.

    python -m tests.support.capacity_backend --port P --slots N --service S [--queued-healthz]

Requests beyond N wait inside it (like a saturated gunicorn's accept queue), so its capacity
is N / S requests per second whatever it is offered. With --queued-healthz, /healthz waits
for a slot like any request (the worst case: a health check stuck behind the work).
GET /_control/stats returns {"completed", "max_in_flight"}.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


class State:
    def __init__(self, slots: int, service: float, queued_healthz: bool) -> None:
        self.semaphore = asyncio.Semaphore(slots)
        self.service = service
        self.queued_healthz = queued_healthz
        self.completed = 0
        self.in_flight = 0
        self.max_in_flight = 0


STATE: web.AppKey[State] = web.AppKey("state", State)


async def work(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await request.read()
    async with state.semaphore:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.service)
        finally:
            state.in_flight -= 1
    state.completed += 1
    return web.json_response({"ok": True, "path": request.path})


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.queued_healthz:
        async with state.semaphore:
            await asyncio.sleep(0.001)
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"completed": state.completed, "max_in_flight": state.max_in_flight})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--service", type=float, required=True)
    parser.add_argument("--queued-healthz", action="store_true")
    args = parser.parse_args()

    async def build() -> web.Application:
        app = web.Application()
        app[STATE] = State(args.slots, args.service, args.queued_healthz)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/_control/stats", stats)
        app.router.add_route("*", "/{tail:.*}", work)
        return app

    web.run_app(build(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
