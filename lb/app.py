"""Wiring: one worker's runtime (pool, health checks, admission, proxy, public listener)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from lb.admission.authority import PolicyAuthority
from lb.admission.distribution import Holder
from lb.admission.options import AdmissionOptions
from lb.admission.service import build_admission
from lb.cache.edge import CacheOptions, EdgeCache
from lb.cache.purge import PurgeSubscriber
from lb.config import Settings, admission_options
from lb.fastpath import FastPath
from lb.http.connection import ClientLimits
from lb.http.deadlines import Deadlines
from lb.http.upstream import UpstreamClient
from lb.identity import ClientResolver
from lb.metrics import CacheMetrics, Metrics
from lb.options import proxy_options
from lb.overload import Admitter
from lb.priority import Classifier
from lb.proxy import Proxy
from lb.server import Server
from lb.status import RateMeter
from lb.upstream.backend import BackendURL, backend_name
from lb.upstream.health import HealthChecker
from lb.upstream.pool import Pool

log = logging.getLogger("lb")


class Runtime:
    """Everything one process needs to serve the public port, started and stopped as one."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        loop = asyncio.get_running_loop()
        self.settings = settings
        self.registry = registry
        self.started = time.time()
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(8))
        self.metrics = Metrics(registry, [backend_name(b) for b in settings.backends])
        self.pool = Pool.from_settings(
            settings, clock=time.monotonic, rng=random.Random(seed), events=self.metrics
        )
        self.checker = HealthChecker(self.pool, settings, random.Random(seed + 1))
        options = admission_options(settings)
        self.admission = build_admission(options, registry)
        self.policy = policy_authority(self.admission, options)
        self.admitter = Admitter(
            self.pool,
            classifier=Classifier(settings.priority_rules),
            clock=time.monotonic,
            rng=random.Random(seed + 3),
            floor=settings.limit_min,
            ceiling=settings.limit_max,
            queue_delay=settings.queue_delay,
            probe_interval=settings.probe_interval,
            critical_reserve=settings.critical_reserve,
            on_shed=self.metrics.shed,
        )
        # coarse hot-path timeouts (header deadline, first byte), swept 10 times a second
        self.deadlines = Deadlines(loop, resolution=min(0.1, settings.header_timeout / 4))
        self.upstream = UpstreamClient(
            max_idle=settings.upstream_keepalive, loop=loop, deadlines=self.deadlines
        )
        self.cache = build_cache(settings, registry, loop)
        self.proxy = Proxy(
            proxy_options(settings),
            pool=self.pool,
            upstream=self.upstream,
            admission=self.admission,
            metrics=self.metrics,
            resolver=ClientResolver(settings.trusted_proxies),
            rng=random.Random(seed + 2),
            loop=loop,
            cache=self.cache,
            admitter=self.admitter,
        )
        self.fast = FastPath(self.proxy) if settings.fast_path else None
        self.server = Server(
            self.proxy,
            ClientLimits(settings.max_header_bytes, settings.header_timeout),
            loop=loop,
            on_protocol_error=self.proxy.ledger.protocol_error,
            deadlines=self.deadlines,
            take=self.fast.take if self.fast is not None else None,
        )
        self._sync_task: asyncio.Task[None] | None = None
        self.on_tick: list[Callable[[], None]] = []
        self.rates = RateMeter()

    @property
    def draining(self) -> bool:
        return self.proxy.draining

    async def start(self, sock: socket.socket) -> None:
        await self.admission.start()
        await self.policy.start()  # the fleet's policy, before the first request
        await self.checker.start()
        if self.cache is not None and self.cache.subscriber is not None:
            self.cache.subscriber.start()
        await self.server.start(sock)
        self._sync_task = asyncio.create_task(self._sync(), name="lb-sync")

    async def drain_and_stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to LB_DRAIN_TIMEOUT), close all."""
        self.proxy.draining = True
        self.server.stop_accepting()
        self.server.close_idle()  # busy ones close after their response (Connection: close)
        timeout = self.settings.drain_timeout
        in_flight = self.proxy.ledger.in_flight
        if in_flight:
            log.warning("draining: %d request(s) in flight, waiting up to %gs", in_flight, timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.proxy.ledger.wait_idle()
        self.server.close_idle()
        self.server.abort_all()  # whatever outlived LB_DRAIN_TIMEOUT
        await self.stop()

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.checker.stop()
        await self.deadlines.close()
        if self.proxy.ledger.access_log is not None:
            self.proxy.ledger.access_log.flush()
        with contextlib.suppress(Exception):
            await self.policy.close()
        with contextlib.suppress(Exception):
            await self.admission.close()
        if self.cache is not None:
            await self.cache.close()
        self.upstream.close()

    def set_backends(self, backends: tuple[BackendURL, ...]) -> tuple[list[str], list[str]]:
        """Replace the backend set live (kept backends keep their state); (added, removed)."""
        # a throwaway pool builds the new backends exactly as at start; kept ones stay as they are
        fresh = Pool.from_settings(
            dataclasses.replace(self.settings, backends=backends),
            clock=time.monotonic,
            events=self.metrics,
        )
        added, removed = self.pool.set_backends(fresh.backends)
        if added or removed:
            log.warning("backends: added %s, removed %s", added or "none", removed or "none")
        return added, removed

    def snapshot(self) -> dict[str, Any]:
        """This process's state for /status."""
        return {
            "pid": os.getpid(),
            "started": self.started,
            "in_flight": self.proxy.ledger.in_flight,
            "draining": self.proxy.draining,
            "backends": self.pool.snapshot(),
            "answered": dict(self.proxy.ledger.answered),
            "rates": self.rates.sample(self.proxy.ledger.answered),
            "admission": self.admission.status(),
            "top_rejected": self.admission.top_rejected(10),
            "cache": None if self.cache is None else self.cache.snapshot(),
            "overload": self.overload_snapshot(),
            "fast_path": None
            if self.fast is None
            else {"taken": self.fast.taken, "relayed": self.fast.relayed},
        }

    def overload_snapshot(self) -> dict[str, Any]:
        """The admitter's state, also pushed to the overload gauges."""
        snap = self.admitter.snapshot()
        self.metrics.sync_overload(snap)
        return snap

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                self.metrics.sync(self.pool.snapshot())
                self.overload_snapshot()
                self.pool.logs.flush()
                self.admitter.logs.flush()
                self.rates.sample(self.proxy.ledger.answered)
                if self.proxy.ledger.access_log is not None:
                    self.proxy.ledger.access_log.flush()
                if self.cache is not None:
                    self.cache.tick()
                for tick in self.on_tick:
                    tick()
            except Exception:
                log.exception("periodic sync failed")


def build_cache(
    settings: Settings, registry: CollectorRegistry, loop: asyncio.AbstractEventLoop
) -> EdgeCache | None:
    """The micro-cache, with its metrics and (with REDIS_URL) its purge subscription."""
    if settings.cache_bytes <= 0:
        return None
    metrics = CacheMetrics(registry, settings.cache_bytes)
    options = CacheOptions(
        max_bytes=settings.cache_bytes,
        max_entry_bytes=min(settings.cache_max_entry_bytes, settings.cache_bytes),
        lock_timeout=settings.cache_lock_timeout,
    )
    cache = EdgeCache(options, loop=loop, events=metrics)
    cache.on_tick = lambda: metrics.sync(cache.store.bytes, len(cache.store), cache.store.evicted)
    if settings.redis_url:
        cache.subscriber = PurgeSubscriber(
            settings.redis_url,
            on_purge=lambda tags: cache.purge(tags, "redis"),
            on_gap=cache.clear,
        )
    return cache


def policy_authority(holder: Holder, options: AdmissionOptions) -> PolicyAuthority:
    """Policy changes through Redis when the lb has one (every process follows it), else local."""
    store = None
    if options.redis_url:
        from lb.admission.distribution import RedisPolicyStore

        store = RedisPolicyStore(options.redis_url, cluster=options.redis_cluster)
    return PolicyAuthority(holder, options.boot_policy(), store=store)
