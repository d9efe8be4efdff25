"""The lb master: LB_WORKERS workers on SO_REUSEPORT, the admin listener, reload on SIGHUP.

With several workers the master owns the admin listener and the public listening sockets:
one SO_REUSEPORT socket per worker slot, bound once and handed to the slot's worker (an
inherited file descriptor), so the kernel spreads connections over the slots as before. It
spawns `python -m lb --worker` children with PROMETHEUS_MULTIPROC_DIR set to a directory it
creates (and removes at exit), so one /metrics scrape aggregates every worker. Workers
publish a status snapshot there every tick and pick up drain/restore, the live backend set
and (without Redis) the admission policy from files the master writes there.

SIGTERM drains: stop accepting, finish in-flight requests (up to LB_DRAIN_TIMEOUT), exit.
SIGHUP reloads without a refused connection: the master reads the configuration again
(environment plus LB_ENV_FILE), starts a new worker per slot on the slot's socket, and once
every new worker serves, SIGTERMs the old ones. Connections waiting in a slot's accept queue
are never lost: the queue belongs to the socket, which the new worker already holds. New
workers run the code installed now, so the same signal upgrades the lb. A configuration that
does not validate, or workers that do not come up, leave the old workers serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lb.admission.distribution import RESET_MARK
from lb.config import ConfigError, Settings, effective_environ, load_settings, parse_backends
from lb.server import listen_socket
from lb.workers import (
    ARRIVALS_DIR,
    CONTROL_FILE,
    CRASH_LOOP,
    LISTEN_FD,
    POLICY_FILE,
    PREVIEW_FILE,
    QUICK_DEATH,
    START_WITHIN,
    STATUS_DIR,
    TICK,
    stop_event,
    write_json,
)

log = logging.getLogger("lb.workers")


class MultiControl:
    """The master's admin view: metrics and status aggregated over the workers' files."""

    def __init__(self, directory: Path, settings: Settings, supervisor: Supervisor) -> None:
        from prometheus_client import CollectorRegistry

        from lb.admission.authority import PolicyAuthority
        from lb.admission.distribution import PolicyCopy, RedisPolicyStore
        from lb.config import admission_options
        from lb.status import StatusBoard

        self.directory = directory
        self.supervisor = supervisor
        self.backends = [b.url for b in settings.backends]
        self.drained: set[str] = set()
        self.board = StatusBoard()
        self.registry = CollectorRegistry()
        options = admission_options(settings)
        boot = options.boot_policy()
        store = None
        if options.redis_url:
            store = RedisPolicyStore(options.redis_url, cluster=options.redis_cluster)
        self.policy = PolicyAuthority(
            PolicyCopy(boot), boot, store=store, deliver=self._deliver_policy
        )
        self._preview_id = 0

    def rebase(self, settings: Settings) -> None:
        """After a reload: the environment's policy is the new one (a runtime policy stays)."""
        from dataclasses import replace

        from lb.config import admission_options

        boot = admission_options(settings).boot_policy()
        authority = self.policy
        authority.boot = boot
        if authority.sync is not None:
            authority.sync.boot = boot
        current = authority.holder.policy
        if current.version == 0:
            authority.holder.policy = boot
        elif current.set_by.endswith(RESET_MARK):
            authority.holder.policy = replace(
                boot, version=current.version, set_by=current.set_by, set_at=current.set_at
            )

    @property
    def names(self) -> set[str]:
        from lb.upstream.backend import backend_name

        return {backend_name(b) for b in parse_backends(",".join(self.backends))}

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

    def write_control(self) -> None:
        write_json(
            self.directory / CONTROL_FILE,
            {"drained": sorted(self.drained), "backends": self.backends},
        )

    async def _set(self, name: str, *, drained: bool) -> bool:
        if name not in self.names:
            return False
        if drained:
            self.drained.add(name)
        else:
            self.drained.discard(name)
        self.write_control()

        def applied() -> bool:
            states = [
                row["drained"]
                for snap in self.snapshots()
                for row in snap.get("backends", [])
                if row["name"] == name
            ]
            return bool(states) and all(state == drained for state in states)

        await self._until(applied)
        return True

    async def set_backends(self, urls: list[str]) -> dict[str, Any]:
        wanted = sorted(urls)
        self.backends = wanted
        self.drained &= self.names
        self.write_control()

        def applied() -> bool:
            return all(
                sorted(row["url"] for row in snap.get("backends", [])) == wanted
                for snap in self.snapshots()
                if not snap.get("draining")
            )

        done = await self._until(applied)
        return {"backends": wanted, "applied": done}

    async def _deliver_policy(self, policy: Any) -> None:
        """Without Redis, the workers read the policy from a file; with it, from Redis."""
        if self.policy.store is None:
            doc = policy.to_json()
            if policy.set_by.endswith(RESET_MARK):
                doc = {"reset": True, "version": policy.version, "set_by": policy.set_by}
            write_json(self.directory / POLICY_FILE, doc)

        def applied() -> bool:
            return all(
                snap.get("admission", {}).get("policy_version", -1) >= policy.version
                for snap in self.snapshots()
                if not snap.get("draining")
            )

        await self._until(applied)

    async def arrivals(self, seconds: float) -> list[dict[str, Any]]:
        """Every serving worker's arrival records of the last `seconds` (for a preview)."""
        self._preview_id += 1
        ident = f"{os.getpid()}-{self._preview_id}"
        (self.directory / ARRIVALS_DIR).mkdir(exist_ok=True)
        write_json(self.directory / PREVIEW_FILE, {"id": ident, "seconds": seconds})
        found: dict[int, dict[str, Any]] = {}

        def answered() -> bool:
            for pid in self.supervisor.pids():
                if pid in found:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    doc = json.loads((self.directory / ARRIVALS_DIR / f"{pid}.json").read_text())
                    if doc.get("id") == ident:
                        found[pid] = doc.get("arrivals", {})
            return all(pid in found for pid in self.supervisor.pids())

        await self._until(answered)
        return list(found.values())

    @staticmethod
    async def _until(done: Any, within: float = 4 * TICK) -> bool:
        """Wait for the workers (they look every TICK) until `done()`; whether it came true."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if done():
                return True
            await asyncio.sleep(TICK / 10)
        return bool(done())

    def metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class Supervisor:
    """Starts a worker per slot, restarts any that dies, rolls them over on a reload, and
    stops them all on request. Owns the slots' listening sockets for the master's lifetime."""

    def __init__(self, settings: Settings, directory: Path, environ: dict[str, str]) -> None:
        self.settings = settings
        self.directory = directory
        self.env = worker_environ(environ, directory)
        self.sockets: list[socket.socket] = []
        self.workers: list[subprocess.Popen[bytes]] = []  # index = slot
        self.retiring: list[subprocess.Popen[bytes]] = []  # old generation, draining
        self.started: dict[int, float] = {}  # pid -> spawn time
        self.stopping = False
        self.quick_deaths = 0  # workers in a row that died right after starting

    def pids(self) -> list[int]:
        return [w.pid for w in (*self.workers, *self.retiring) if w.poll() is None]

    def bind(self, count: int) -> None:
        """Have a listening socket for each of `count` slots (bound before any worker starts)."""
        while len(self.sockets) < count:
            self.sockets.append(listen_socket(self.settings.listen))

    def spawn(self, slot: int) -> subprocess.Popen[bytes]:
        fd = self.sockets[slot].fileno()
        worker = subprocess.Popen(
            [sys.executable, "-m", "lb", "--worker"],
            env={**self.env, LISTEN_FD: str(fd)},
            pass_fds=(fd,),
        )
        self.started[worker.pid] = time.monotonic()
        return worker

    @property
    def crash_looping(self) -> bool:
        """Workers keep dying as soon as they start: restarting them is pointless."""
        return self.quick_deaths >= CRASH_LOOP

    def start(self) -> None:
        self.bind(self.settings.workers)
        self.workers = [self.spawn(slot) for slot in range(self.settings.workers)]

    def _forget(self, worker: subprocess.Popen[bytes]) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, str(self.directory))  # type: ignore[no-untyped-call]
        self.started.pop(worker.pid, None)
        with contextlib.suppress(OSError):
            (self.directory / STATUS_DIR / f"{worker.pid}.json").unlink()

    def check(self) -> None:
        """Replace dead workers (a crash must not shrink the lb); reap drained old ones."""
        for worker in list(self.retiring):
            if worker.poll() is not None:
                log.warning("old worker %d drained and exited", worker.pid)
                self._forget(worker)
                self.retiring.remove(worker)
        if not self.retiring:
            # slots a reload gave up: no worker holds their sockets any more
            while len(self.sockets) > len(self.workers):
                self.sockets.pop().close()
        for slot, worker in enumerate(self.workers):
            code = worker.poll()
            if code is None or self.stopping:
                continue
            lived = time.monotonic() - self.started.get(worker.pid, 0.0)
            self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH else 0
            log.error("worker %d exited with %s; starting a new one", worker.pid, code)
            self._forget(worker)
            if self.crash_looping:
                return
            self.workers[slot] = self.spawn(slot)

    async def reload(self, settings: Settings, environ: dict[str, str]) -> bool:
        """Start a new generation of workers on the slots' sockets, then retire the old one.

        False (the old workers keep serving, the new ones are stopped) when the new ones do
        not all serve within START_WITHIN seconds.
        """
        previous = (self.settings, self.env)
        self.settings, self.env = settings, worker_environ(environ, self.directory)
        self.bind(settings.workers)
        fresh = [self.spawn(slot) for slot in range(settings.workers)]
        if not await self._serving(fresh):
            for worker in fresh:
                if worker.poll() is None:
                    worker.kill()
                worker.wait()
                self._forget(worker)
            self.settings, self.env = previous
            return False
        old, self.workers = self.workers, fresh
        for worker in old:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            self.retiring.append(worker)
        return True

    async def _serving(self, workers: list[subprocess.Popen[bytes]]) -> bool:
        """Every worker has published its first snapshot (it does once it accepts)."""
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            if any(w.poll() is not None for w in workers):
                return False
            if all((self.directory / STATUS_DIR / f"{w.pid}.json").exists() for w in workers):
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        """SIGTERM every worker and wait for their drain; SIGKILL what outlives it."""
        self.stopping = True
        everyone = [*self.workers, *self.retiring]
        for worker in everyone:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_timeout + 5
        # child processes offer no awaitable exit here: poll them
        while time.monotonic() < deadline and any(w.poll() is None for w in everyone):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for worker in everyone:
            if worker.poll() is None:
                log.error("worker %d did not drain in time: killing it", worker.pid)
                worker.kill()
                worker.wait()
        for sock in self.sockets:
            sock.close()


def worker_environ(environ: dict[str, str], directory: Path) -> dict[str, str]:
    """A worker's environment: the master's as read now (LB_ENV_FILE already merged in,
    so a worker never reads a file newer than the one its master validated)."""
    env = {k: v for k, v in environ.items() if k not in ("LB_ENV_FILE", LISTEN_FD)}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return env


class Reloader:
    """SIGHUP: read the configuration again, validate it, roll the workers over to it."""

    def __init__(
        self,
        base: dict[str, str],
        settings: Settings,
        supervisor: Supervisor,
        control: MultiControl,
    ) -> None:
        self.base = base  # the master's own environment; LB_ENV_FILE is read on top of it
        self.settings = settings
        self.supervisor = supervisor
        self.control = control
        self._running = False

    async def reload(self) -> bool:
        if self._running:
            log.warning("SIGHUP: a reload is already under way; ignored")
            return False
        self._running = True
        try:
            return await self._reload()
        finally:
            self._running = False

    async def _reload(self) -> bool:
        try:
            environ = effective_environ(self.base)
            settings = load_settings(environ)
        except ConfigError as exc:
            log.error("SIGHUP: bad configuration, the running workers stay: %s", exc)
            return False
        fixed = [
            name
            for name, old, new in (
                ("LB_LISTEN", self.settings.listen, settings.listen),
                ("LB_ADMIN_LISTEN", self.settings.admin_listen, settings.admin_listen),
                ("REDIS_URL", self.settings.redis_url, settings.redis_url),
            )
            if old != new
        ]
        if fixed:
            log.error(
                "SIGHUP: %s cannot change on a reload (restart the lb); the running workers stay",
                ", ".join(fixed),
            )
            return False
        if settings.backends != self.settings.backends:
            # a new LB_BACKENDS wins over the live set; otherwise the live set stays
            self.control.backends = sorted(b.url for b in settings.backends)
            self.control.write_control()
        log.warning("SIGHUP: starting %d new workers", settings.workers)
        if not await self.supervisor.reload(settings, environ):
            log.error("SIGHUP: the new workers did not come up; the running workers stay")
            return False
        self.settings = settings
        self.control.rebase(settings)
        log.warning("SIGHUP: reloaded; old workers drain and exit")
        return True


async def run_master(settings: Settings, environ: dict[str, str] | None = None) -> int:
    """LB_WORKERS>1: supervise the workers, serve the admin listener, reload on SIGHUP."""
    from lb.admin import build_admin_app, start_admin

    base = dict(os.environ if environ is None else environ)
    directory = Path(tempfile.mkdtemp(prefix="lb-workers-"))
    (directory / STATUS_DIR).mkdir()
    (directory / ARRIVALS_DIR).mkdir()
    supervisor = Supervisor(settings, directory, effective_environ(base))
    stop = stop_event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()
    try:
        # fail fast (one line, exit 1) when the public port is taken, before any worker starts
        supervisor.bind(settings.workers)
        control = MultiControl(directory, settings, supervisor)
        control.write_control()
        reloader = Reloader(base, settings, supervisor, control)

        def on_hup() -> None:
            task = loop.create_task(reloader.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        supervisor.start()
        await control.policy.start()
        admin = await start_admin(
            build_admin_app(control, token=settings.admin_token),
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
            if not reloads:
                supervisor.check()
            if supervisor.crash_looping:
                log.error("workers die as soon as they start (see above): giving up")
                await supervisor.stop()
                await admin.cleanup()
                await control.policy.close()
                return 1
        log.warning("SIGTERM: draining %d workers", len(supervisor.pids()))
        await supervisor.stop()
        await admin.cleanup()
        await control.policy.close()
    finally:
        if not supervisor.stopping:
            await supervisor.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0
