"""Active health checks: one task per process GETs LB_HEALTH_PATH on every backend, jittered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Final, Protocol

import aiohttp

from lb.upstream.backend import Backend
from lb.upstream.pool import Pool

log = logging.getLogger("lb.upstream.health")

JITTER: Final = 0.1  # each interval is stretched or shrunk by up to this share
USER_AGENT: Final = "tourbook-lb-health/1"


def next_delay(interval: float, elapsed: float, rng: random.Random) -> float:
    """Seconds to wait before the next round: a jittered interval, minus the time the last
    round took (so slow checks do not stretch the period), never negative."""
    jittered = interval * (1 + rng.uniform(-JITTER, JITTER))
    return max(0.0, jittered - elapsed)


def passed(status: int) -> bool:
    """A health check passes on any 2xx answer."""
    return 200 <= status < 300


class HealthSettings(Protocol):
    """What the checker reads (lb.config.Settings has it): LB_HEALTH_PATH, _INTERVAL, _TIMEOUT."""

    @property
    def health_path(self) -> str: ...

    @property
    def health_interval(self) -> float: ...

    @property
    def health_timeout(self) -> float: ...


class HealthChecker:
    """Checks every backend each LB_HEALTH_INTERVAL (jittered, so several lb processes do not
    check in lockstep), each check bounded by LB_HEALTH_TIMEOUT, and reports every result
    to the pool, whose rise/fall hysteresis decides health. It checks ejected and drained
    backends too: a passed check is how an ejected backend returns to rotation."""

    def __init__(self, pool: Pool, settings: HealthSettings, rng: random.Random) -> None:
        self._pool = pool
        self._path = settings.health_path
        self._interval = settings.health_interval
        self._timeout = aiohttp.ClientTimeout(total=settings.health_timeout)
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        # A fresh connection per check: a check then proves the backend still accepts
        # connections, not merely that an old keep-alive socket is open.
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
        )
        self._pool.active_checks = True
        self._task = asyncio.create_task(self._run(), name="lb-health-checks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pool.active_checks = False
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check_all(self) -> None:
        """One round: check every backend concurrently and report the results."""
        backends = self._pool.backends
        results = await asyncio.gather(*(self._check(b) for b in backends))
        for backend, (ok, timed_out) in zip(backends, results, strict=True):
            self._pool.health_result(backend, ok, timed_out=timed_out)

    async def _run(self) -> None:
        # A short random start offset spreads the checks of several lb processes apart.
        await asyncio.sleep(self._rng.uniform(0, JITTER * self._interval))
        while True:
            started = time.monotonic()
            try:
                await self.check_all()
            except Exception:  # a bug here must not silently end health checking
                log.exception("health check round failed")
            await asyncio.sleep(next_delay(self._interval, time.monotonic() - started, self._rng))

    async def _check(self, backend: Backend) -> tuple[bool, bool]:
        """(passed, timed out). Checks go straight to the backend on their own connection:
        they never wait behind the lb's concurrency limit or its queue."""
        assert self._session is not None
        url = backend.url.url + self._path
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                await response.read()
                ok = passed(response.status)
                if not ok:
                    log.debug("health check %s: status %d", backend.name, response.status)
                return ok, False
        except TimeoutError:
            log.debug("health check %s timed out", backend.name)
            return False, True
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("health check %s failed: %r", backend.name, exc)
            return False, False
