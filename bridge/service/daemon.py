"""The daemon: orders start, stop and reload of the door's parts, and runs their periodic jobs.

Threads and loops:
- the asyncio loop owns inputs, timers and the network (upstream verify, heartbeats, sync);
- one decision worker thread owns the verifier and the SQLite writers, so decisions are
  serialised (replay memory and rate limits stay coherent) and the loop never blocks on a
  scrypt hash or an fsync;
- gpiozero's own threads time relay pulses and watch door inputs.

Each job has its own unit in bridge/service/: `parts` builds everything from the config (relays
first, every key error one `ConfigError`), `scan_pipeline` decides a scan (its audit row is on
disk before the relay moves), `health` owns what `status` shows, `reader_supervisor` keeps the
readers running, `clock_watch` the trusted clock, `audit_events` records door and reader events,
`reload_plan` says what a reload may change. This class only puts them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine

import structlog

from bridge import __version__
from bridge.config import Config
from bridge.door.relay import Relay
from bridge.inputs.base import Input
from bridge.service import sdnotify
from bridge.service.audit_events import DoorEventListener
from bridge.service.clock_watch import Clock, ClockWatch, utc_now
from bridge.service.health import Health
from bridge.service.parts import Parts, build_parts, policy_from, public_key
from bridge.service.reader_supervisor import ReaderSupervisor
from bridge.service.reload_plan import plan_reload
from bridge.service.scan_pipeline import DecisionListener, ScanJob, ScanPipeline
from bridge.service.worker import Worker
from bridge.state import lifecycle
from verifier.decide import Policy
from verifier.guard import RateLimiter, ReplayMemory
from verifier.types import AccessDecision

if TYPE_CHECKING:
    from gpiozero.pins import Factory

    from bridge.outward import Outward
    from bridge.service.status_socket import StatusServer
    from bridge.upstream.adapter import UpstreamAdapter

log = structlog.get_logger()


class NotStarted(RuntimeError):
    """A part of the daemon asked for before `start()` built it."""


class Daemon:
    def __init__(self, config: Config, *, pin_factory: Factory | None = None, clock: Clock = utc_now,
                 inputs: list[Input] | None = None, adapters: list[UpstreamAdapter] | None = None,
                 notifier: sdnotify.Notifier | None = None, clock_trusted: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.clock_watch = ClockWatch(clock, Path(config.bridge.state_dir))
        self.clock: Clock = self.clock_watch.now
        self.clock_trusted: Callable[[], bool] = clock_trusted or self.clock_watch.is_trusted
        self.notifier = notifier or sdnotify.Notifier.from_env()
        self._pin_factory = pin_factory
        self._extra_inputs = inputs or []
        self._adapters = adapters
        # Filled by the builder before anything else can fail, so an error at start still
        # finds every relay to release (bridge/cli/main.py).
        self.doors: dict[str, Relay] = {}
        # Registered before or after start: metrics, MQTT (bridge/outward/__init__.py), the demo.
        self.decision_listeners: list[DecisionListener] = []
        self.door_event_listeners: list[DoorEventListener] = []
        self.worker: Worker[ScanJob] = Worker(self._decide_batch)
        self.outward: Outward | None = None
        self.status_server: StatusServer | None = None
        self._parts: Parts | None = None
        self._health: Health | None = None
        self._pipeline: ScanPipeline | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()

    @property
    def state_dir(self) -> Path:
        return Path(self.config.bridge.state_dir)

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise NotStarted("the daemon's parts exist once start() has built them")
        return self._parts

    @property
    def health(self) -> Health:
        if self._health is None:
            raise NotStarted("the daemon's health exists once start() has built the parts")
        return self._health

    @property
    def pipeline(self) -> ScanPipeline:
        if self._pipeline is None:
            raise NotStarted("the scan pipeline exists once start() has built the parts")
        return self._pipeline

    def _decide_batch(self, jobs: list[ScanJob]) -> list[AccessDecision]:
        return self.pipeline.decide_batch(jobs)

    # --- start ------------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        parts = self._parts = build_parts(
            cfg, doors=self.doors, clock=self.clock, clock_watch=self.clock_watch, clock_trusted=self.clock_trusted,
            submit=self.worker.submit, pin_factory=self._pin_factory, extra_inputs=self._extra_inputs,
            adapters=self._adapters, door_event_listeners=self.door_event_listeners)
        health = self._health = Health(cfg, parts, self.clock_watch, self.clock,
                                       mqtt_status=lambda: self.outward.mqtt_status() if self.outward is not None else None,
                                       metrics_status=lambda: self.outward.metrics_status() if self.outward is not None else None)
        pipeline = self._pipeline = ScanPipeline(cfg, parts, health, self.worker, self.clock, self.clock_trusted,
                                                 self.decision_listeners)
        readers = ReaderSupervisor(health, parts.recorder, pipeline.emit, self._publish_status)
        for reader_id, reader in parts.reader_feedback.items():
            door = cfg.doors.get(parts.reader_door.get(reader_id, ""))
            reader.attach(readers, grant_led_s=door.pulse_s if door else 3.0)
        parts.outbox.append("BOOT", {"bridgeId": cfg.bridge.id, "firmwareVersion": __version__,
                                     "cacheVersion": parts.cache.meta.version, "previousExit": parts.previous_exit})
        for inp in parts.inputs:
            self._spawn(readers.run(inp), f"input-{inp.reader_id}")
        self._spawn(self._refresh_forever(), "storage-view")
        self._spawn(self.notifier.watchdog_loop(), "watchdog")
        if any(getattr(a, "has_heartbeat", True) for a in parts.adapters):
            self._spawn(self._heartbeats_forever(), "heartbeats")
        if parts.sync is not None and parts.replicator is not None:
            from bridge.central.replicator import run_replication
            from bridge.central.sync import run_sync

            self._spawn(run_sync(parts.sync), "sync")
            self._spawn(run_replication(parts.replicator), "replication")
        if parts.handback is not None:
            self._spawn(parts.handback.run(), "handback")
        await asyncio.to_thread(health.read_storage)
        await self._start_status_server()
        from bridge.outward import Outward

        self.outward = Outward.start(self)
        meta = parts.cache.meta
        health.show_offline()  # note_staleness only sees changes: stale from the start winks now
        log.info("started", bridge=cfg.bridge.id, version=__version__, mode=cfg.bridge.mode,
                 readers=",".join(i.reader_id for i in parts.inputs) or "-", doors=",".join(self.doors) or "-",
                 upstream=",".join(a.name for a in parts.adapters) or "none", cache_version=meta.version,
                 stale=health.stale, previous_exit=parts.previous_exit.get("reason"))
        if meta.version == 0:
            log.warning("cache_empty", check="import a bundle (door-bridge grants import FILE) or configure upstream.central sync")
        elif health.stale:
            log.warning("cache_stale", cache_version=meta.version, policy=cfg.cache.staleness,
                        check="is the central reachable? is the clock right (timedatectl)?")
        self.notifier.ready(health.status_line())
        # Only now may a schedule hold a relay open (never at start or restart, see mode_shell.py).
        parts.modes.armed = True
        self.worker.submit(parts.modes.apply)
        self._spawn(self._modes_forever(), "door-modes")
        self.worker.submit(parts.emergency.read_inputs)  # fire/lockdown/tamper lines as they are now
        if parts.central is not None:
            self._spawn(parts.emergency.poll_forever(parts.central), "commands")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _start_status_server(self) -> None:
        from bridge.service.status_socket import StatusServer

        path = self.status_socket_path()
        try:
            self.status_server = StatusServer(path, self.health.snapshot)
            await self.status_server.start()
        except OSError as e:
            self.status_server = None
            log.warning("status_socket_unavailable", path=str(path), error=str(e)[:120],
                        check="RuntimeDirectory= in the unit, or permissions of the state dir")

    def status_socket_path(self) -> Path:
        from bridge.service.status_socket import socket_path

        return socket_path(state_dir=self.state_dir)

    def _publish_status(self) -> None:
        self.notifier.status(self.health.status_line())

    # --- periodic jobs ----------------------------------------------------------------------------

    async def _refresh_forever(self, every_s: float = 2.0) -> None:
        parts, health = self.parts, self.health
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(health.read_storage)
            self.worker.submit(health.note_staleness)  # an idle door also notices not_after passing
            with contextlib.suppress(Exception):
                self.clock_watch.watch(parts.cache.meta.issued_at_ms, self.config.bridge.id,
                                       lambda kind, body: self.worker.submit(parts.outbox.append, kind, body))
            self.pipeline.report_dropped()
            if parts.replicator is not None and not parts.adapters:
                rs = parts.replicator.state
                if rs.online is not None and rs.online != health.upstream.online:
                    health.mark_upstream(rs.online, rs.last_error)
            self._publish_status()

    async def _heartbeats_forever(self) -> None:
        from bridge.central.heartbeat import run_heartbeats

        reader_ids = [r.id for r in self.config.readers] or [self.config.bridge.id]
        await run_heartbeats(self.parts.adapters, reader_ids, self.config.upstream.http,
                             on_result=self.health.heartbeat_result)

    async def _modes_forever(self, every_s: float = 1.0) -> None:
        emergency = self.parts.emergency
        while True:
            await asyncio.sleep(every_s)
            await asyncio.wrap_future(self.worker.submit(emergency.tick))
            await self.apply_modes()

    async def apply_modes(self) -> None:
        """Apply the effective door modes now (slot starts and ends; tests call it after moving the clock)."""
        await asyncio.wrap_future(self.worker.submit(self.parts.modes.apply))

    async def quiesce(self) -> None:
        """Wait until every scan handed to the daemon so far has been decided and recorded."""
        await self.pipeline.quiesce()

    # --- stop -------------------------------------------------------------------------------------

    async def stop(self, reason: str = "requested") -> None:
        if self._stopped.is_set():
            return
        self.notifier.stopping("stopping")
        for door in self.doors.values():
            door.release()
        if self._parts is None:  # start failed while building: the relays above are all there is
            self.worker.shutdown()
            self._stopped.set()
            return
        parts, pipeline = self.parts, self.pipeline
        if self.outward is not None:
            with contextlib.suppress(Exception):
                await self.outward.stop()
        for task in self._tasks + list(pipeline.upstream.late_tasks):
            task.cancel()
        # Scans already taken are finished, never dropped: their audit rows must land.
        if pipeline.tasks:
            await asyncio.wait(list(pipeline.tasks), timeout=2.0)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if parts.replicator is not None and parts.replicator.state.online:
            # Flush: one bounded attempt to hand the central what is pending. Whatever does not
            # make it stays in audit.db (already fsync'd) for the next start.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(parts.replicator.drain(), timeout=1.5)
        if self.status_server is not None:
            with contextlib.suppress(Exception):
                await self.status_server.stop()
        await parts.close_connections()
        await asyncio.wrap_future(self.worker.submit(parts.close_storage))
        self.worker.shutdown()
        parts.close_hardware()
        lifecycle.mark_stopped(self.state_dir)
        self._stopped.set()
        log.info("stopped", bridge=self.config.bridge.id, reason=reason)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # --- reload -----------------------------------------------------------------------------------

    def reload(self, new: Config) -> list[str]:
        """Apply what can change without touching hardware or connections (policy, staleness,
        JWT settings, log level, relay pulse lengths, mode); return the sections that need a
        restart (bridge/service/reload_plan.py decides which). Scans keep flowing: nothing here
        stops an input."""
        parts = self.parts
        plan = plan_reload(self.config, new)
        for name, section in plan.pulses.items():
            self.doors[name].cfg = section
        self.worker.submit(self._swap_policy, policy_from(new), plan.guards_changed)
        self._rotate_bundle_key(new)
        if parts.learned is not None:
            self.worker.submit(setattr, parts.learned, "section", plan.offline)
        from bridge.service import logsetup

        logsetup.configure(new.bridge.log_level, new.bridge.log_format)
        self.config = self.health.config = self.pipeline.config = self.pipeline.upstream.config = plan.running
        return list(plan.restart)

    def _rotate_bundle_key(self, new: Config) -> None:
        """A new pinned key takes effect at once for every later sync: keeping the old one until a
        restart would let a bundle signed with a key the site just retired (perhaps leaked) apply.
        `grants import` reads the config file itself, so it has the new key already."""
        sync = self.parts.sync
        if sync is None:
            return
        from verifier.bundle import public_key_text

        key = public_key(new)
        if public_key_text(key) != public_key_text(sync.public_key):
            sync.public_key = key
            log.warning("bundle_key_rotated", key=public_key_text(key)[:12] + "…",
                        check="bundles signed with the previous key are refused from now on; "
                              "the central must sign with the new key")

    def _swap_policy(self, policy: Policy, guards_changed: bool) -> None:
        """On the decision worker, between two decisions. New replay or rate limits start with an
        empty memory sized by them (a shorter window must not keep what the longer one saw)."""
        verifier = self.parts.verifier
        verifier.policy = policy
        if guards_changed:
            verifier.replays = ReplayMemory(int(policy.replay_window_s * 1000))
            verifier.limiter = RateLimiter(policy.rate_limit_denies, int(policy.rate_limit_window_s * 1000),
                                           int(policy.rate_limit_cooldown_s * 1000))
