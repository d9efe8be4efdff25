"""Request smuggling through the upstream keep-alive pool, replayed against real gunicorn replicas.

A replica that answers before it has read the whole request body (here: an unauthenticated
`POST /api/bookings/` is a 401 before Django reads anything) is still reading that body
when its answer is complete. If the lb put that connection back in its keep-alive pool, the
next request on it, another client's, would be parsed as the rest of the body. The rule
under test: an upstream connection is reused only when the request was sent completely and
the response read completely. Every innocent request after an attack gets its own answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.backend import conftest as backend_fixtures
from tests.lb.conftest import LbProcess, start_lb

pytestmark = [pytest.mark.processes, pytest.mark.postgres]

# the replica fixtures of the backend tests (migrated databases, gunicorn processes)
migrated_template = backend_fixtures.migrated_template
module_backend_env = backend_fixtures.module_backend_env
module_replicas = backend_fixtures.module_replicas

OPEN_ADMISSION = {"BUCKET_CAPACITY": "1000000", "LEAK_RATE": "1000000", "LB_RATE_RULES": ""}
ROUNDS = 3
VICTIMS = 48  # innocent requests after each attack, as in the report


@pytest.fixture(scope="module")
def replica(module_replicas: Callable[..., list[str]]) -> str:
    # one replica: nothing can hide a poisoned connection behind a retry elsewhere
    return module_replicas(1, extra_env={"GUNICORN_THREADS": "8"})[0]


@pytest.fixture(scope="module", params=["streaming", "buffering"])
def lb(
    request: pytest.FixtureRequest, replica: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LbProcess]:
    buffering = "1" if request.param == "buffering" else "0"
    process = start_lb(
        {
            **OPEN_ADMISSION,
            "LB_BACKENDS": replica,
            "LB_FIRST_BYTE_TIMEOUT": "5",
            "LB_REQUEST_BUFFERING": buffering,
        },
        tmp_path_factory.mktemp("smuggling") / "lb.log",
    )
    yield process
    process.process.stop()


def victim(port: int, index: int) -> tuple[int, str, str, Any]:
    """One innocent GET on a fresh client connection: (status, sent id, echoed id, body)."""
    rid = f"victim-{index}-{uuid.uuid4().hex[:8]}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(
            "GET",
            f"/api/tours/?page_size=1&n={index}",
            headers={"X-Request-ID": rid, "Cookie": f"secret-of-victim-{index}"},
        )
        resp = conn.getresponse()
        raw = resp.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw[:200]
        return resp.status, rid, resp.getheader("X-Request-ID") or "", body
    except (OSError, http.client.HTTPException) as exc:
        return 0, rid, "", repr(exc)
    finally:
        conn.close()


def assert_victims_served(port: int) -> None:
    """Some victims one after the other (the poisoned connection is the pool's most recent),
    then the rest at once: each gets a 200 JSON answer carrying its own request id."""
    answers = [victim(port, i) for i in range(8)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers += list(pool.map(lambda i: victim(port, i), range(8, VICTIMS)))
    broken = [a for a in answers if a[0] != 200 or a[1] != a[2] or not isinstance(a[3], dict)]
    assert not broken, f"{len(broken)} of {len(answers)} innocent requests broken: {broken[:3]}"


def send_quietly(sock: socket.socket, data: bytes) -> None:
    # the lb may close an attacker's connection once it has answered: that is fine
    with contextlib.suppress(OSError):
        sock.sendall(data)


def read_status(sock: socket.socket) -> int:
    """The status of the first answer on `sock` (0 if the connection closed without one)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return 0
            data += chunk
    except OSError:
        return 0
    return int(data.split(b" ", 2)[1])


def attack_chunked(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(
            b"POST /api/bookings/ HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        time.sleep(0.3)
        send_quietly(sock, b"5\r\nworld\r\n")
        time.sleep(0.1)
        send_quietly(sock, b"0\r\n\r\n")
        return read_status(sock)


def attack_content_length(port: int) -> int:
    """A body bigger than any the lb keeps for retries, sent in two parts; the replica
    answers after the first. The replica then waits for the rest of the declared length,
    which a reused connection would fill with the next clients' requests."""
    first = b"[" + b"1," * 50_000
    rest = b"1" * 100_000 + b"]"
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(
            b"POST /api/bookings/ HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(first) + len(rest), first)
        )
        time.sleep(0.3)
        send_quietly(sock, rest)
        return read_status(sock)


@pytest.mark.slow
@pytest.mark.parametrize("attack", [attack_chunked, attack_content_length])
def test_early_answers_never_poison_the_upstream_pool(
    lb: LbProcess, attack: Callable[[int], int]
) -> None:
    for _ in range(ROUNDS):
        assert attack(lb.port) == 401  # the replica's early answer reaches the attacker
        try:
            assert_victims_served(lb.port)
        except AssertionError:
            print(lb.process.log(20000))  # the lb side of the story
            raise
