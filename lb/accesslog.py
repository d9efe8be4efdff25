"""The access log: one line per request, buffered and written in batches (not one syscall each)."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

FLUSH_LINES: Final = 256  # also flushed every tick (0.5 s) and at exit


class AccessLog:
    """`<time> lb.access <request id> <client> "<method> <path>" <status> <backend> <ms>ms`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    def line(
        self, rid: str, client: str, method: str, path: str, status: int, backend: str, ms: float
    ) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self._lines.append(
            f'{self._stamp} lb.access {rid} {client} "{method} {path}" {status} {backend} '
            f"{ms:.1f}ms\n"
        )
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed or full log stream must not take requests down
