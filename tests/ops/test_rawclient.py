"""The benches' lean HTTP/1.1 client (ops/bench/rawclient.py) against a real aiohttp server:
keep-alive reuse, chunked and HEAD answers, a kept-alive connection the server closed, a
refused connection and the timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ops.bench.rawclient import ClientError, RawClient
from tests.support.net import free_port


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[object]]]:
    peers: list[object] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if request.path == "/chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for piece in (b"one,", b"two"):
                await resp.write(piece)
            await resp.write_eof()
            return resp
        if request.path == "/slow":
            await asyncio.sleep(2)
        if request.path == "/close":
            return web.Response(text="bye", headers={"Connection": "close"})
        body = await request.read()
        return web.json_response(
            {"method": request.method, "body": body.decode(), "x": request.headers.get("X-A")},
            headers={"Retry-After": "7"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, peers
    await runner.cleanup()


async def test_requests_share_a_kept_alive_connection(server: tuple[int, list[object]]) -> None:
    port, peers = server
    client = RawClient("127.0.0.1", port)
    got = await client.request("GET", "/a", {"X-A": "1"})
    assert got.status == 200 and got.headers["retry-after"] == "7"
    assert (await client.request("POST", "/a", {}, b"hi")).body == (
        b'{"method": "POST", "body": "hi", "x": null}'
    )
    head = await client.request("HEAD", "/a")
    assert head.status == 200 and head.body == b""
    assert (await client.request("GET", "/chunked")).body == b"one,two"
    assert len(set(peers)) == 1  # one connection carried them all
    await client.close()


async def test_a_connection_the_server_closed_is_not_reused(
    server: tuple[int, list[object]],
) -> None:
    port, peers = server
    client = RawClient("127.0.0.1", port)
    assert (await client.request("GET", "/close")).body == b"bye"
    assert (await client.request("GET", "/a")).status == 200
    assert len(set(peers)) == 2
    await client.close()


async def test_refused_and_too_slow_are_errors(server: tuple[int, list[object]]) -> None:
    port, _ = server
    with pytest.raises(ClientError):
        await RawClient("127.0.0.1", free_port()).request("GET", "/")
    with pytest.raises(TimeoutError):
        await RawClient("127.0.0.1", port, timeout=0.2).request("GET", "/slow")
