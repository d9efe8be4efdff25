"""The one body pump: bytes from one side to the other with back-pressure and an idle timeout.

It serves both directions: a streamed request body (client -> backend) and a response body
(backend -> client). Reading pauses while the writing side is not keeping up (`drain`), so
a body is never held whole.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

Read = Callable[[], Awaitable[bytes]]
Write = Callable[[bytes], None]
Drain = Callable[[], Awaitable[None]]


class Stalled(Exception):
    """No progress for the idle timeout (or the deadline passed); `reading` says which side
    was silent: the one we read from (True) or the one we write to (False)."""

    def __init__(self, reading: bool) -> None:
        super().__init__("reading" if reading else "writing")
        self.reading = reading


async def pump(
    read: Read,
    write: Write,
    drain: Drain,
    *,
    chunked: bool,
    idle_timeout: float,
    deadline: float = math.inf,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Copy `read()` pieces to `write` until `read()` returns b"" (True), or until `stop()`
    says to give up before writing a piece (False). `chunked` frames each piece and ends
    the body with the last chunk. Raises Stalled after `idle_timeout` s without progress."""
    loop = asyncio.get_running_loop()
    reading = True
    try:
        async with asyncio.timeout(min(loop.time() + idle_timeout, deadline)) as timer:
            while True:
                reading = True
                chunk = await read()
                if not chunk:
                    break
                if stop is not None and stop():
                    return False
                reading = False
                write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                await drain()
                timer.reschedule(min(loop.time() + idle_timeout, deadline))
    except TimeoutError:
        raise Stalled(reading) from None
    if chunked:
        write(b"0\r\n\r\n")
    return True
