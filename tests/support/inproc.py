"""The proxy in-process: real HTTP/1.1 server side and proxy, in-memory backends and client.

`InProcessLb(settings_env, backends)` wires a Proxy exactly as lb/app.py does, but over
lb/http/memory.py's upstream; `await lb.send(raw)` feeds raw request bytes to a real
ClientConnection and returns the raw bytes it wrote back once the exchange is over.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from lb.admission.service import build_admission
from lb.config import admission_options, load_settings
from lb.fastpath import FastPath
from lb.http.connection import ClientConnection, ClientLimits
from lb.http.memory import Handler, MemoryBackend, MemoryUpstream
from lb.identity import ClientResolver
from lb.metrics import Metrics
from lb.options import proxy_options
from lb.proxy import Proxy
from lb.server import Server
from lb.upstream.pool import Pool
from tests.support.clock import FakeClock


class _ClientTransport(asyncio.Transport):
    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer
        self.data = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        self.conn: ClientConnection | None = None
        self.eof_sent = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
            assert self.conn is not None
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closed.done()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_sent = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


# settings every InProcessLb starts from (a test module may set LB_FAST_PATH here to run
# its tests on both request paths)
DEFAULT_ENV: dict[str, str] = {}


class InProcessLb:
    """A proxy over in-memory backends named b0, b1, ... (their pool names)."""

    def __init__(self, handlers: list[Handler], *, admission: bool = False, **env: str) -> None:
        """`admission`: in-process buckets as BUCKET_CAPACITY / LEAK_RATE / LB_RATE_RULES say
        (else none)."""
        names = [f"127.0.0.1:{9001 + i}" for i in range(len(handlers))]
        backends = ",".join(f"http://{n}" for n in names)
        self.settings = load_settings(
            {"LB_BACKENDS": backends, "LB_SEED": "1", **DEFAULT_ENV, **env}
        )
        self.clock = FakeClock()
        self.backends = {n: MemoryBackend(h) for n, h in zip(names, handlers, strict=True)}
        self.pool = Pool.from_settings(self.settings, clock=self.clock, rng=random.Random(1))
        self.metrics = Metrics(CollectorRegistry(), names)
        s = self.settings
        loop = asyncio.get_running_loop()
        self.proxy = Proxy(
            replace(proxy_options(s), access_log=False),
            pool=self.pool,
            upstream=MemoryUpstream(self.backends),
            admission=build_admission(admission_options(s), CollectorRegistry())
            if admission
            else None,
            metrics=self.metrics,
            resolver=ClientResolver(s.trusted_proxies),
            rng=random.Random(2),
            loop=loop,
        )
        self.fast = FastPath(self.proxy) if s.fast_path else None
        self.server = Server(
            self.proxy,
            ClientLimits(s.max_header_bytes, s.header_timeout),
            loop=loop,
            on_protocol_error=self.proxy.ledger.protocol_error,
            take=self.fast.take if self.fast is not None else None,
        )

    def backend(self, index: int) -> MemoryBackend:
        return list(self.backends.values())[index]

    def connect(self, peer: str = "10.0.0.1") -> tuple[ClientConnection, _ClientTransport]:
        """A client connection of our own, to feed by hand (`conn.data_received`)."""
        transport = _ClientTransport(peer)
        conn = self.server()
        transport.conn = conn
        conn.connection_made(transport)
        return conn, transport

    async def send(self, raw: bytes, *, peer: str = "10.0.0.1", within: float = 5.0) -> bytes:
        """Feed `raw` on a new client connection; the bytes written back when the lb has
        answered everything and is idle (or closed the connection)."""
        transport = _ClientTransport(peer)
        conn = self.server()
        transport.conn = conn
        conn.connection_made(transport)
        conn.data_received(raw)
        async with asyncio.timeout(within):
            while not transport.closed.done():
                await asyncio.sleep(0)
                if not conn.busy and not conn._queue and self.proxy.ledger.in_flight == 0:
                    await asyncio.sleep(0.01)
                    if not conn.busy and self.proxy.ledger.in_flight == 0:
                        break
        if not transport.closed.done():
            transport.close()
        await asyncio.sleep(0)
        return bytes(transport.data)


def answers(raw: bytes) -> list[tuple[int, bytes, bytes]]:
    """The answers in `raw`, in order: (status, head, body); bodies framed by
    Content-Length (interim 1xx have none)."""
    found = []
    while raw.startswith(b"HTTP/1."):
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        found.append((status, head, rest[:length]))
        raw = rest[length:]
    return found


def statuses(raw: bytes) -> list[int]:
    """The status codes of the answers in `raw`, in order."""
    return [status for status, _, _ in answers(raw)]
