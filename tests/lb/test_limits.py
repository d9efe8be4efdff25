"""A body over LB_MAX_BODY_BYTES gets a readable 413, not a reset (lingering close, as nginx
does): the lb answers, then reads and drops what the client still sends before closing."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from tests.lb.conftest import FakeBackend, LbProcess

pytestmark = [pytest.mark.processes]

MB = 1024 * 1024
OPEN_ADMISSION = {"BUCKET_CAPACITY": "1000000", "LEAK_RATE": "1000000", "LB_RATE_RULES": ""}


def upload_and_read(port: int, head: bytes, body: bytes) -> bytes:
    """Send the whole request as a plain client does, then read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        for start in range(0, len(body), MB):
            sock.sendall(body[start : start + MB])
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_15mb_body_over_a_10mb_limit_gets_a_readable_413(
    framing: str,
    fake_backends: Callable[[int], list[FakeBackend]],
    lb_process: Callable[..., LbProcess],
) -> None:
    (backend,) = fake_backends(1)
    lb = lb_process(
        {**OPEN_ADMISSION, "LB_BACKENDS": backend.url, "LB_MAX_BODY_BYTES": str(10 * MB)}
    )
    payload = b"z" * (15 * MB)
    if framing == "chunked":
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"".join(
            b"%x\r\n%s\r\n" % (MB, payload[i : i + MB]) for i in range(0, len(payload), MB)
        )
        body += b"0\r\n\r\n"
    else:
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload)
        body = payload
    answer = upload_and_read(lb.port, head, body)
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line, answer[:300]
    head_part, _, json_body = rest.partition(b"\r\n\r\n")
    assert b"X-Request-ID: " in head_part and b"Connection: close" in head_part
    assert json.loads(json_body)["code"] == "body_too_large"
    assert backend.stats()["requests"] == 0
