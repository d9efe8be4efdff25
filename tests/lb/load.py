"""An open-loop load for process tests: requests leave on schedule, whatever the answers do.

Each request goes on a fresh connection, so SO_REUSEPORT spreads them over every worker and
a refused connection shows up as an error of its own. Bounded in rate and time; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Sent:
    """One request of the load: when it left, and what came back (or the error instead)."""

    index: int
    url: str
    sent: float  # time.monotonic()
    status: int | None = None
    policy: str | None = None  # RateLimit-Policy
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status is None or self.status >= 500


async def open_loop(
    urls: Callable[[int], str],
    *,
    rate: float,
    seconds: float,
    headers: Callable[[int], dict[str, str]] = lambda i: {},
    request_timeout: float = 30.0,
) -> list[Sent]:
    """Send `rate` requests per second for `seconds` to `urls(i)`; every result, in order."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    results: list[Sent] = []
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=request_timeout)
    ) as session:

        async def one(item: Sent, head: dict[str, str]) -> None:
            try:
                async with session.get(item.url, headers=head) as resp:
                    await resp.read()
                    item.status = resp.status
                    item.policy = resp.headers.get("RateLimit-Policy")
            except Exception as exc:
                item.error = f"{type(exc).__name__}: {exc}"

        tasks = []
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            item = Sent(i, urls(i), time.monotonic())
            results.append(item)
            tasks.append(asyncio.create_task(one(item, headers(i))))
        await asyncio.gather(*tasks)
    return results


def admin_call(
    url: str, method: str = "GET", body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One admin listener request; (status, JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Admin-User": "tests"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
