"""An open-loop HTTP client: requests start on a fixed arrival schedule, whatever the answers do.

A closed-loop client (N users, each waiting for its answer) slows down with the server and
so never sees an overload; an open-loop one keeps offering the same rate, as real crowds do.
Each request is (class, method, path, headers, body); results keep the status, the latency,
the error code of an lb answer and its Retry-After. The requests go out through the lean
client of ops/bench/rawclient.py, so the generator keeps its schedule far past capacity.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ops.bench.rawclient import ClientError, RawClient

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
    address = urlsplit(base_url)
    client = RawClient(address.hostname or "127.0.0.1", address.port or 80, timeout=request_timeout)
    try:

        async def one(job: Job, due: float) -> None:
            klass, method, path, headers, body = job
            started = time.monotonic()
            try:
                answer = await client.request(method, path, headers, body)
            except (ClientError, TimeoutError, OSError):
                results.append(Result(klass, 0, time.monotonic() - started, "transport"))
                return
            code = ""
            if answer.status >= 400:
                try:
                    code = str(json.loads(answer.body).get("code", ""))
                except (ValueError, AttributeError):
                    code = ""
            results.append(
                Result(
                    klass,
                    answer.status,
                    time.monotonic() - started,
                    code,
                    answer.headers.get("retry-after"),
                    started - due,
                )
            )

        await open_loop(rate, duration, lambda i, due: one(make_job(i), due))
    finally:
        await client.close()
    return results


async def open_loop(
    rate: float, duration: float, start: Callable[[int, float], Coroutine[Any, Any, None]]
) -> float:
    """Call `start(i, due)` for request i at its due time (rate per second, `duration`
    seconds), never waiting for answers; then wait for all of them. Requests due in the same
    millisecond tick start together, so the schedule costs one timer per tick, not per
    request. Returns the seconds the schedule took (longer than `duration`: the client
    itself fell behind)."""
    tasks: set[asyncio.Task[None]] = set()
    begin = time.monotonic()
    total = int(rate * duration)
    launched = 0
    while launched < total:
        due = min(total, int((time.monotonic() - begin) * rate) + 1)
        while launched < due:
            task = asyncio.create_task(start(launched, begin + launched / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            launched += 1
        await asyncio.sleep(0.001)
    spent = time.monotonic() - begin
    if tasks:
        await asyncio.gather(*tasks)
    return spent


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]
