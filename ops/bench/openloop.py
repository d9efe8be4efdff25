"""An open-loop HTTP client: requests start on a fixed arrival schedule, whatever the answers do.

A closed-loop client (N users, each waiting for its answer) slows down with the server and
so never sees an overload; an open-loop one keeps offering the same rate, as real crowds do.
Each request is (class, method, path, headers, body); results keep the status, the latency,
the error code of an lb answer and its Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

Job = tuple[str, str, str, dict[str, str], bytes | None]  # class, method, path, headers, body


@dataclass(frozen=True, slots=True)
class Result:
    klass: str
    status: int  # 0: transport error
    seconds: float
    code: str = ""
    retry_after: str | None = None
    late: float = 0.0  # how far behind its schedule the request started


async def run_open_loop(
    base_url: str,
    rate: float,
    duration: float,
    make_job: Callable[[int], Job],
    *,
    request_timeout: float = 30.0,
) -> list[Result]:
    """Offer `rate` requests per second for `duration` seconds; every answer is awaited."""
    results: list[Result] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout, auto_decompress=False
    ) as session:

        async def one(job: Job, due: float) -> None:
            klass, method, path, headers, body = job
            started = time.monotonic()
            try:
                async with session.request(
                    method, base_url + path, headers=headers, data=body
                ) as resp:
                    payload = await resp.read()
                    code = ""
                    if resp.status >= 400:
                        try:
                            code = str(json.loads(payload).get("code", ""))
                        except (ValueError, AttributeError):
                            code = ""
                    results.append(
                        Result(
                            klass,
                            resp.status,
                            time.monotonic() - started,
                            code,
                            resp.headers.get("Retry-After"),
                            started - due,
                        )
                    )
            except (aiohttp.ClientError, TimeoutError, OSError):
                results.append(Result(klass, 0, time.monotonic() - started, "transport"))

        tasks: list[asyncio.Task[None]] = []
        begin = time.monotonic()
        total = int(rate * duration)
        for i in range(total):
            due = begin + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(make_job(i), due)))
        await asyncio.gather(*tasks)
    return results


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]
