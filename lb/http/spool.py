"""A request body received whole before a backend is taken (nginx's `proxy_request_buffering`).

A slow client then costs the lb a socket and some bytes, never a replica thread: the
backend sees the request only once it can be sent at full speed. Bodies stay in memory up
to a limit and are spooled to an anonymous temporary file beyond it, so memory stays
bounded whatever the body size (LB_MAX_BODY_BYTES caps the file).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from typing import IO, Final

from lb.errors import BadRequest, BodyTooLarge, RequestTimeout
from lb.http.request import Body, BodyError

BLOCK: Final = 64 * 1024  # bytes read back from the file per write to the backend


class ClientGone(BadRequest):
    """The client went away (or broke the framing) while we were reading its request body."""

    default_detail = "The request body ended early."


class BufferedBody:
    """The bytes of one request body: a list of chunks, or a temporary file past `memory`."""

    __slots__ = ("_chunks", "_file", "memory", "size")

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.size = 0
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None

    @property
    def spooled(self) -> bool:
        return self._file is not None

    def append(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None and self.size <= self.memory:
            self._chunks.append(chunk)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="lb-body-")  # noqa: SIM115 - closed in close()
            self._file.writelines(self._chunks)
            self._chunks = []
        self._file.write(chunk)

    def data(self) -> bytes:
        """The whole body, when it is held in memory."""
        assert self._file is None, "a spooled body is read with blocks()"
        return b"".join(self._chunks)

    def blocks(self) -> Iterator[bytes]:
        """The body from its start, in pieces (a new pass each call: retries send it again)."""
        if self._file is None:
            yield from self._chunks
            return
        file = self._file
        file.flush()
        file.seek(0)
        while block := file.read(BLOCK):
            yield block

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []


async def receive_body(body: Body, *, limit: int, memory: int, idle_timeout: float) -> BufferedBody:
    """Read the whole request body: BodyTooLarge past `limit` bytes, RequestTimeout when the
    client sends nothing for `idle_timeout` s, ClientGone when it goes away."""
    buffered = BufferedBody(memory)
    try:
        if body.eof:  # usually it came with the head: no waiting, no timer
            await _read_into(buffered, body, limit, None)
        else:
            async with asyncio.timeout(idle_timeout) as timer:
                await _read_into(buffered, body, limit, (timer, idle_timeout))
    except TimeoutError:
        buffered.close()
        raise RequestTimeout() from None
    except BodyError as exc:
        buffered.close()
        raise ClientGone(str(exc)) from None
    except BaseException:
        buffered.close()
        raise
    return buffered


async def _read_into(
    buffered: BufferedBody,
    body: Body,
    limit: int,
    idle: tuple[asyncio.Timeout, float] | None,
) -> None:
    loop = asyncio.get_running_loop()
    while chunk := await body.read():
        buffered.append(chunk)
        if buffered.size > limit:
            raise BodyTooLarge(f"Request body exceeds {limit} bytes (LB_MAX_BODY_BYTES).")
        if idle is not None:
            idle[0].reschedule(loop.time() + idle[1])
