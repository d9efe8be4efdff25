"""The load a bench puts on a server, and its figures: wrk runs (with a Python fallback),
req/s, latency percentiles, errors and the server's CPU per request."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.processes import descendants

WRK = shutil.which("wrk")


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    cpu_us: float | None = None  # CPU time the server processes spent per request


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for current in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def measure(url: str, pid: int | None, **load: Any) -> Result:
    """`run_load(url)`, plus the CPU the server process tree `pid` spent per request."""
    before = cpu_seconds(pid) if pid else None
    started = time.monotonic()
    result = run_load(url, **load)
    elapsed = time.monotonic() - started
    if before is None or pid is None or not result.rps:
        return result
    spent = cpu_seconds(pid) - before
    requests = result.rps * min(elapsed, float(load.get("duration", 5.0)))
    return Result(result.rps, result.p50_ms, result.p99_ms, result.errors, spent / requests * 1e6)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Result:
    """req/s, p50, p99 and error count from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in match.groups())
    return Result(rps, p50, p99, errors)


def run_load(url: str, *, connections: int = 64, duration: float = 5.0, threads: int = 2) -> Result:
    """Closed-loop load on `url`: wrk when installed, else a Python client."""
    if WRK is not None:
        done = subprocess.run(
            [
                WRK,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
        )
        return parse_wrk(done.stdout)
    return asyncio.run(_python_load(url, connections, duration))


async def _python_load(url: str, connections: int, duration: float) -> Result:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status >= 400:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.monotonic() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.monotonic() - started
    latencies.sort()
    if not latencies:
        return Result(0.0, 0.0, 0.0, errors)
    return Result(
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors,
    )


def table(rows: Sequence[tuple[str, Result | None]], reference: str) -> str:
    """The printed figures: req/s, p50, p99, errors, CPU per request, ratio to `reference`."""
    ref = dict(rows).get(reference)
    width = max([28, *(len(name) + 1 for name, _ in rows)])
    lines = [
        f"{'setup':<{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7} "
        f"{'errors':>7} {'cpu us/req':>10}  x {reference}"
    ]
    for name, res in rows:
        if res is None:
            lines.append(f"{name:<{width}} {'n/a':>9}")
            continue
        ratio = f"{res.rps / ref.rps:.2f}" if ref and ref.rps else "-"
        cpu = f"{res.cpu_us:.1f}" if res.cpu_us is not None else "-"
        tail = f"{res.p99_ms / res.p50_ms:.1f}" if res.p50_ms else "-"
        lines.append(
            f"{name:<{width}} {res.rps:>9.0f} {res.p50_ms:>8.2f} {res.p99_ms:>8.2f} {tail:>7} "
            f"{res.errors:>7} {cpu:>10}  {ratio:>5}"
        )
    return "\n".join(lines)
