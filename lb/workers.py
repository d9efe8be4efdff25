"""Processes: a single lb process, or a master supervising LB_WORKERS workers on SO_REUSEPORT.

With several workers the master owns the admin listener (never the public port): it spawns
`python -m lb --worker` children with PROMETHEUS_MULTIPROC_DIR set to a directory it
creates (and removes at exit), so one /metrics scrape aggregates every worker. Workers
publish a status snapshot there every tick and pick up drain/restore from a control file.
SIGTERM drains: stop accepting, finish in-flight requests (up to LB_DRAIN_TIMEOUT), exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lb.config import Settings
from lb.server import listen_socket

log = logging.getLogger("lb.workers")

TICK = 0.5  # seconds between worker snapshots / control checks, and master supervision
QUICK_DEATH = 2.0  # a worker dying sooner than this after its start counts toward a loop
CRASH_LOOP = 5  # that many quick deaths in a row: the master gives up and exits 1
STATUS_DIR = "status"
CONTROL_FILE = "control.json"


def _stop_event() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _write_json(path: Path, data: Any) -> None:
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
    stop = _stop_event()
    await runtime.start(sock)
    admin = await start_admin(
        build_admin_app(LocalControl(runtime, registry)),
        settings.admin_listen.host,
        settings.admin_listen.port,
    )
    log.warning("lb listening on %s (admin %s)", settings.listen, settings.admin_listen)
    await stop.wait()
    log.warning("SIGTERM: draining")
    await runtime.drain_and_stop()
    await admin.cleanup()
    return 0


# -- a worker ---------------------------------------------------------------------------------


class Publisher:
    """A worker's side of the shared directory: its snapshot out, drain/restore in."""

    def __init__(self, directory: Path, runtime: Any) -> None:
        self.runtime = runtime
        self.status_path = directory / STATUS_DIR / f"{os.getpid()}.json"
        self.control_path = directory / CONTROL_FILE
        self._control_mtime = 0.0
        self._parent = os.getppid()
        self.orphaned = False

    def tick(self) -> None:
        self._apply_control()
        _write_json(self.status_path, self.runtime.snapshot())
        if os.getppid() != self._parent:
            self.orphaned = True

    def _apply_control(self) -> None:
        try:
            mtime = self.control_path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._control_mtime:
            return
        try:
            drained = set(json.loads(self.control_path.read_text()).get("drained", []))
        except (OSError, ValueError):
            return
        self._control_mtime = mtime
        pool = self.runtime.pool
        for backend in pool.backends:
            if backend.name in drained:
                pool.drain(backend.name)
            else:
                pool.restore(backend.name)


async def run_worker(settings: Settings, directory: Path) -> int:
    """One of LB_WORKERS processes: the public listener only."""
    from prometheus_client import CollectorRegistry

    from lb.app import Runtime

    sock = listen_socket(settings.listen)
    runtime = Runtime(settings, CollectorRegistry())
    publisher = Publisher(directory, runtime)
    stop = _stop_event()

    def tick() -> None:
        publisher.tick()
        if publisher.orphaned:
            log.warning("master is gone: draining")
            stop.set()

    runtime.on_tick.append(tick)
    await runtime.start(sock)
    publisher.tick()
    await stop.wait()
    runtime.proxy.draining = True
    with contextlib.suppress(OSError):
        publisher.tick()
    await runtime.drain_and_stop()
    with contextlib.suppress(OSError):
        publisher.status_path.unlink()
    return 0


# -- the master -------------------------------------------------------------------------------


class MultiControl:
    """The master's admin view: metrics and status aggregated over the workers' files."""

    def __init__(self, directory: Path, settings: Settings, supervisor: Supervisor) -> None:
        from lb.status import StatusBoard
        from lb.upstream.backend import backend_name

        self.directory = directory
        self.supervisor = supervisor
        self.names = {backend_name(b) for b in settings.backends}
        self.drained: set[str] = set()
        self.board = StatusBoard()

    @property
    def draining(self) -> bool:
        return self.supervisor.stopping

    def snapshots(self) -> list[dict[str, Any]]:
        snaps = []
        for pid in self.supervisor.pids():
            path = self.directory / STATUS_DIR / f"{pid}.json"
            with contextlib.suppress(OSError, ValueError):
                snaps.append(json.loads(path.read_text()))
        return snaps

    def status(self) -> dict[str, Any]:
        return self.board.combine(self.snapshots(), draining=self.draining)

    async def drain(self, name: str) -> bool:
        return await self._set(name, drained=True)

    async def restore(self, name: str) -> bool:
        return await self._set(name, drained=False)

    async def _set(self, name: str, *, drained: bool) -> bool:
        if name not in self.names:
            return False
        if drained:
            self.drained.add(name)
        else:
            self.drained.discard(name)
        _write_json(self.directory / CONTROL_FILE, {"drained": sorted(self.drained)})
        # answer once every worker has applied it (they look every TICK)
        deadline = time.monotonic() + 4 * TICK
        while time.monotonic() < deadline:
            await asyncio.sleep(TICK / 5)
            states = [
                row["drained"]
                for snap in self.snapshots()
                for row in snap.get("backends", [])
                if row["name"] == name
            ]
            if states and all(state == drained for state in states):
                break
        return True

    def metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class Supervisor:
    """Starts LB_WORKERS workers, restarts any that dies, and stops them all on request."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
        self.workers: list[subprocess.Popen[bytes]] = []
        self.started: dict[int, float] = {}  # pid -> spawn time
        self.stopping = False
        self.quick_deaths = 0  # workers in a row that died right after starting

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.poll() is None]

    def spawn(self) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen([sys.executable, "-m", "lb", "--worker"], env=self.env)
        self.started[worker.pid] = time.monotonic()
        return worker

    @property
    def crash_looping(self) -> bool:
        """Workers keep dying as soon as they start: restarting them is pointless."""
        return self.quick_deaths >= CRASH_LOOP

    def start(self) -> None:
        self.workers = [self.spawn() for _ in range(self.settings.workers)]

    def check(self) -> None:
        """Replace dead workers (a crash must not shrink the lb)."""
        from prometheus_client import multiprocess

        for i, worker in enumerate(self.workers):
            code = worker.poll()
            if code is None or self.stopping:
                continue
            lived = time.monotonic() - self.started.pop(worker.pid, 0.0)
            self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH else 0
            log.error("worker %d exited with %s; starting a new one", worker.pid, code)
            multiprocess.mark_process_dead(worker.pid, str(self.directory))  # type: ignore[no-untyped-call]
            with contextlib.suppress(OSError):
                (self.directory / STATUS_DIR / f"{worker.pid}.json").unlink()
            if self.crash_looping:
                return
            self.workers[i] = self.spawn()

    async def stop(self) -> None:
        """SIGTERM every worker and wait for their drain; SIGKILL what outlives it."""
        self.stopping = True
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_timeout + 5
        # child processes offer no awaitable exit here: poll them
        while time.monotonic() < deadline and any(w.poll() is None for w in self.workers):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if worker.poll() is None:
                log.error("worker %d did not drain in time: killing it", worker.pid)
                worker.kill()
                worker.wait()


async def run_master(settings: Settings) -> int:
    """LB_WORKERS>1: supervise the workers, serve the admin listener."""
    from lb.admin import build_admin_app, start_admin

    # fail fast (one line, exit 1) when the public port is taken, before any worker starts
    listen_socket(settings.listen).close()
    directory = Path(tempfile.mkdtemp(prefix="lb-workers-"))
    (directory / STATUS_DIR).mkdir()
    supervisor = Supervisor(settings, directory)
    stop = _stop_event()
    try:
        supervisor.start()
        admin = await start_admin(
            build_admin_app(MultiControl(directory, settings, supervisor)),
            settings.admin_listen.host,
            settings.admin_listen.port,
        )
        log.warning(
            "lb master %d: %d workers on %s (admin %s)",
            os.getpid(),
            settings.workers,
            settings.listen,
            settings.admin_listen,
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await stop.wait()
            supervisor.check()
            if supervisor.crash_looping:
                log.error("workers die as soon as they start (see above): giving up")
                await supervisor.stop()
                await admin.cleanup()
                return 1
        log.warning("SIGTERM: draining %d workers", settings.workers)
        await supervisor.stop()
        await admin.cleanup()
    finally:
        if not supervisor.stopping:
            await supervisor.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0
