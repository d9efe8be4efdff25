"""Processes: a single lb process, or one of the workers a master (lb/master.py) supervises.

A worker serves the public port only, on the SO_REUSEPORT socket its master handed over.
It publishes a status snapshot to the master's directory every tick and picks up from it
drain/restore, the live backend set, (without Redis) the admission policy, and preview
requests. SIGTERM drains: stop accepting, finish in-flight requests (up to
LB_DRAIN_TIMEOUT), exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any, Final

from lb.config import Settings, parse_backends
from lb.server import listen_socket

log = logging.getLogger("lb.workers")

TICK = 0.5  # seconds between worker snapshots / control checks, and master supervision
QUICK_DEATH = 2.0  # a worker dying sooner than this after its start counts toward a loop
CRASH_LOOP = 5  # that many quick deaths in a row: the master gives up and exits 1
STATUS_DIR = "status"
CONTROL_FILE = "control.json"
POLICY_FILE = "policy.json"  # the admission policy without Redis (with Redis: Redis)
PREVIEW_FILE = "preview.json"  # the master asks the workers for their arrival records
ARRIVALS_DIR = "arrivals"
LISTEN_FD = "LB_LISTEN_FD"  # set by the master for its workers only: the inherited socket
START_WITHIN = 15.0  # seconds new workers get to serve during a reload
# The collector's thresholds once serving (Python's defaults: 700, 10, 10). Every request
# allocates and frees a few dozen container objects; with the default 700 a young
# collection ran every ~5 ms under load and promoted whatever was in flight, so full
# collections came every second or so, each 20-30 ms with every connection's objects to
# traverse (the tail and its evidence: docs/load-balancer.md, "Hot path and tail").
GC_THRESHOLDS: Final = (50_000, 20, 100)


def tune_gc() -> None:
    """Once started: what start-up built (modules, settings, the runtime) lives as long as
    the process, so it is frozen out of every later collection, and collections come far
    less often (GC_THRESHOLDS). A request leaves no reference cycles (closed connections
    break theirs), so its garbage is freed by reference counting all the same."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def stop_event() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# -- one process ------------------------------------------------------------------------------


async def run_single(settings: Settings) -> int:
    """LB_WORKERS=1: the public and the admin listener in this process."""
    from prometheus_client import CollectorRegistry

    from lb.admin import LocalControl, build_admin_app, start_admin
    from lb.app import Runtime

    sock = listen_socket(settings.listen)
    registry = CollectorRegistry()
    runtime = Runtime(settings, registry)
    stop = stop_event()
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP,
        lambda: log.error(
            "SIGHUP: a reload needs the lb master (LB_WORKERS >= 2); nothing changed "
            "(the admission policy and the backends can still change through the admin listener)"
        ),
    )
    runtime.on_tick.append(runtime.proxy.ledger.flush_counts)  # counts batched on the hot path
    await runtime.start(sock)
    admin = await start_admin(
        build_admin_app(LocalControl(runtime, registry), token=settings.admin_token),
        settings.admin_listen.host,
        settings.admin_listen.port,
    )
    tune_gc()
    log.warning("lb listening on %s (admin %s)", settings.listen, settings.admin_listen)
    await stop.wait()
    log.warning("SIGTERM: draining")
    await runtime.drain_and_stop()
    await admin.cleanup()
    return 0


# -- a worker ---------------------------------------------------------------------------------


class Publisher:
    """A worker's side of the shared directory: its snapshot out; drain/restore, the backend
    set, the policy (without Redis) and preview requests in."""

    def __init__(self, directory: Path, runtime: Any) -> None:
        self.runtime = runtime
        self.directory = directory
        self.status_path = directory / STATUS_DIR / f"{os.getpid()}.json"
        self.control_path = directory / CONTROL_FILE
        self._mtimes: dict[str, float] = {}
        self._preview_id: Any = None
        self._parent = os.getppid()
        self.orphaned = False

    def tick(self) -> None:
        self.apply()
        write_json(self.status_path, self.runtime.snapshot())
        if os.getppid() != self._parent:
            self.orphaned = True

    def apply(self) -> None:
        """Everything the master asked for since the last look (cheap when nothing changed)."""
        control = self._changed(CONTROL_FILE)
        if control is not None:
            self._apply_control(control)
        policy = self._changed(POLICY_FILE)
        if policy is not None:
            self._apply_policy(policy)
        preview = self._changed(PREVIEW_FILE)
        if preview is not None and preview.get("id") != self._preview_id:
            self._preview_id = preview.get("id")
            seconds = float(preview.get("seconds", 300))
            write_json(
                self.directory / ARRIVALS_DIR / f"{os.getpid()}.json",
                {
                    "id": self._preview_id,
                    "arrivals": self.runtime.admission.arrivals.since(seconds),
                },
            )

    def _changed(self, name: str) -> dict[str, Any] | None:
        path = self.directory / name
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime == self._mtimes.get(name):
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # half-written by someone else: next tick
        self._mtimes[name] = mtime
        return data if isinstance(data, dict) else None

    def _apply_control(self, control: dict[str, Any]) -> None:
        backends = control.get("backends")
        if backends:
            try:
                wanted = parse_backends(",".join(backends))
            except ValueError:
                log.error("control: ignoring a backend set that does not parse: %r", backends)
            else:
                if [b.url.url for b in self.runtime.pool.backends] != [u.url for u in wanted]:
                    self.runtime.set_backends(wanted)
        drained = set(control.get("drained", []))
        pool = self.runtime.pool
        for backend in pool.backends:
            if backend.name in drained:
                pool.drain(backend.name)
            else:
                pool.restore(backend.name)

    def _apply_policy(self, doc: dict[str, Any]) -> None:
        from lb.admission.distribution import resolve
        from lb.admission.policy import PolicyError

        try:
            self.runtime.admission.apply(resolve(doc, self.runtime.policy.boot))
        except (PolicyError, KeyError, TypeError) as exc:
            log.error("ignoring a policy file that does not validate: %s", exc)


def inherited_socket() -> socket.socket | None:
    """The listening socket the master handed over, if it did."""
    fd = os.environ.get(LISTEN_FD, "")
    if not fd.isdigit():
        return None
    sock = socket.socket(fileno=int(fd))
    sock.setblocking(False)
    return sock


async def run_worker(settings: Settings, directory: Path) -> int:
    """One of LB_WORKERS processes: the public listener only."""
    from prometheus_client import CollectorRegistry

    from lb.app import Runtime

    sock = inherited_socket() or listen_socket(settings.listen)
    runtime = Runtime(settings, CollectorRegistry())
    publisher = Publisher(directory, runtime)
    stop = stop_event()
    # a reload's SIGHUP is the master's business; a stray one must not kill a worker
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: None)

    def tick() -> None:
        runtime.proxy.ledger.flush_counts()  # counts batched on the hot path, for the master's scrape
        publisher.tick()
        if publisher.orphaned:
            log.warning("master is gone: draining")
            stop.set()

    runtime.on_tick.append(tick)
    # the live backend set, drains and the policy before the first request, not a tick later
    with contextlib.suppress(OSError):
        publisher.apply()
    await runtime.start(sock)
    tune_gc()
    publisher.tick()
    await stop.wait()
    runtime.proxy.draining = True
    with contextlib.suppress(OSError):
        publisher.tick()
    await runtime.drain_and_stop()
    with contextlib.suppress(OSError):
        publisher.status_path.unlink()
    return 0
