"""The daemon: wires inputs → verifier (or upstream) → audit outbox → door, and keeps them apart.

Threads and loops:
- the asyncio loop owns inputs, timers and the network (upstream verify, heartbeats, sync);
- one decision worker thread owns the verifier and the SQLite writers, so decisions are
  serialised (replay memory and rate limits stay coherent) and the loop never blocks on a
  scrypt hash or an fsync;
- gpiozero's own threads time relay pulses and watch door inputs.

Per scan: parse → (ask the upstream within its budget, if the mode says so) → decide → commit
the audit row (fsync) → pulse → log one line. The relay moves only after the row that explains
it is on disk, and an upstream problem costs at most the budget before the cache decides.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import structlog

from bridge import __version__
from bridge.state import lifecycle
from bridge.service import sdnotify
from bridge.state import files as state_files
from bridge.config import Config, ConfigError
from bridge.door.relay import Relay
from bridge.door.pins import make_pin_factory
from bridge.inputs.base import Input, InputContext, Scan
from bridge.inputs.registry import create_input
from bridge.state.outbox import open_outbox
from bridge.service.config_files import bundle_public_key
from bridge.service.reload_plan import plan_reload
from bridge.service.worker import Worker
from verifier.cache import GrantCache
from verifier.credentials import parse
from verifier.decide import Lockout, Policy, Verifier
from verifier.guard import RateLimiter, ReplayMemory
from verifier.sources import presented_source
from verifier.timeutil import from_ms, iso, iso_seconds, to_ms
from verifier.trusted_time import TimeReading, TrustedTime
from verifier.types import AccessDecision, Credential, DigitalIdToken, InviteCode, Malformed, Pin, Source

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from bridge.central.handback import WebhookHandback
    from bridge.central.replicator import Replicator
    from bridge.central.sync import BundleSync
    from bridge.door.mode_shell import ModeShell
    from bridge.outward import Outward
    from bridge.service.emergency_shell import EmergencyShell
    from bridge.service.status_socket import StatusServer
    from bridge.state.learned import LearnedCache
    from bridge.upstream.adapter import UpstreamAdapter
    from bridge.upstream.central import CentralClient
    from bridge.upstream.errors import UpstreamError

log = structlog.get_logger()

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def policy_from(config: Config) -> Policy:
    return Policy(
        staleness=config.cache.staleness,
        jwt_algorithms=frozenset(config.cache.jwt_algorithms),
        jwt_leeway_s=config.cache.jwt_leeway_s,
        replay_window_s=config.policy.replay_window_s,
        rate_limit_denies=config.policy.rate_limit_denies,
        rate_limit_window_s=config.policy.rate_limit_window_s,
        rate_limit_cooldown_s=config.policy.rate_limit_cooldown_s,
    )


@dataclass
class ReaderState:
    type: str = "unknown"
    last_scan_at: str | None = None
    last_decision: str | None = None
    last_reason: str | None = None
    scans: int = 0
    # Reader health (docs/operations.md, "When a reader fails"): set when its input raised or ended,
    # cleared once a retry has run READER_HEALTHY_AFTER_S without failing.
    last_error: str | None = None
    failures: int = 0
    # A supervised reader (OSDP) whose device stopped answering, with what to check; set and
    # cleared by the reader itself (READER_OFFLINE / READER_ONLINE), not by the retry loop.
    offline: str | None = None

    @property
    def failed(self) -> bool:
        return self.last_error is not None or self.offline is not None


@dataclass
class UpstreamState:
    """What the door knows about the central: for logs, STATUS= and `door-bridge status`."""

    configured: bool = False
    online: bool | None = None
    since: datetime | None = None
    last_error: str | None = None
    last_heartbeat: datetime | None = None
    # Per adapter (by its name), for metrics: is it answering, and when did it last.
    by_name: dict[str, "UpstreamSeen"] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.configured:
            return "none"
        return {True: "online", False: "offline", None: "unknown"}[self.online]


@dataclass
class UpstreamSeen:
    online: bool
    last_success: datetime | None = None


@dataclass
class Stats:
    started_at: datetime = field(default_factory=utc_now)
    decisions: int = 0
    grants: int = 0
    online_decisions: int = 0
    learned_decisions: int = 0
    readers: dict[str, ReaderState] = field(default_factory=dict)


@dataclass
class StorageView:
    """Figures read off SQLite by a background refresher, so the status socket never touches disk."""

    oldest_pending_at: str | None = None
    grants: int = 0
    counted_version: int = -1
    learned: dict[str, Any] = field(default_factory=dict)  # per upstream: entries, oldest


TIME_FLOOR_FILE = "time-floor.json"
# How often the trusted instant is saved as the floor for the next start (an SD card write a minute).
TIME_FLOOR_SAVE_S = 60.0

# Scans accepted but not yet decided. A real door sees a few per minute; this only bounds memory
# against a reader gone mad (each waiting scan is a task and a queue entry).
MAX_SCANS_IN_FLIGHT = 5000
# ... and per reader, so one reader gone mad (or attacked) cannot take every place and starve
# the other readers' scans: they keep being decided while the flood is dropped and counted.
MAX_SCANS_IN_FLIGHT_PER_READER = 1000

# A reader whose input raised (or returned) is started again after a back-off that doubles from
# the first to the last value; it counts as working again once a run has lasted this long.
READER_RETRY_FIRST_S = 5.0
READER_RETRY_MAX_S = 300.0
READER_HEALTHY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class _ScanJob:
    scan: Scan
    credential: Credential
    source: Source  # what was presented × how it was read (verifier.sources)
    online: AccessDecision | None
    started: float
    upstream: str | None = None  # the adapter that gave `online`


def _cache_replaced(what: str) -> None:
    log.warning("grants_db_replaced", what=what,
                check="something outside door-bridge replaced or deleted grants.db; decisions now read the new "
                      "file (an empty one until the next sync); look for a restore script or a manual copy")


def lockout_event(lock: Lockout, bridge_id: str) -> dict[str, Any]:
    """READER_RATE_LIMITED: someone is guessing at this reader (docs/bridge-protocol.md: alert on it)."""
    from verifier.timeutil import from_ms, iso

    return {"bridgeId": bridge_id, "readerId": lock.reader_id, "bucket": "keypad" if lock.keypad else "other",
            "denies": lock.denies, "windowS": lock.window_s, "cooldownS": lock.cooldown_s,
            "lockedUntil": iso(from_ms(lock.until_ms))}


def needs_online(credential: Credential) -> bool:
    """Credentials the cache cannot judge at all (Digital ID tokens live only at Digital ID)."""
    return isinstance(credential, DigitalIdToken)


class Daemon:
    def __init__(self, config: Config, *, pin_factory: Any = None, clock: Clock = utc_now,
                 inputs: list[Input] | None = None, adapters: list[Any] | None = None,
                 notifier: sdnotify.Notifier | None = None, clock_trusted: Callable[[], bool] | None = None) -> None:
        self.config = config
        # Every instant the daemon decides with comes through the trusted-time floor
        # (verifier/trusted_time.py, docs/trusted-time.md): the wall clock, unless it is behind
        # what is known to have happened already.
        self._wall_clock = clock
        self.trusted_time = TrustedTime()
        self.time_reading = TimeReading(0, True, 0, 0)
        self._clock_was_trusted = True
        self._floor_saved_mono = 0.0
        self.clock: Clock = self._trusted_now
        # Whether the clock may be believed (a schedule unlocks a door only while it is).
        self.clock_trusted: Callable[[], bool] = clock_trusted or self._clock_is_trusted
        self.modes: ModeShell | None = None
        self.emergency: EmergencyShell | None = None  # bridge/service/emergency_shell.py, when [emergency] asks for anything
        self._pin_factory = pin_factory
        self._extra_inputs = inputs or []
        self.adapters: list[Any] = adapters if adapters is not None else []
        self._adapters_given = adapters is not None
        self.notifier = notifier or sdnotify.Notifier.from_env()
        self.stats = Stats()
        self.upstream = UpstreamState()
        self.storage = StorageView()
        self.decision_listeners: list[Callable[[AccessDecision, float], None]] = []
        # (door, event type) after the event's audit row: metrics and MQTT (bridge/outward/__init__.py).
        self.door_event_listeners: list[Callable[[str, str], None]] = []
        self.outward: Outward | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._scan_tasks: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()
        self._worker: Worker[_ScanJob] = Worker(self._decide_batch)
        self.dropped_scans = 0
        self.dropped_by_reader: collections.Counter[str] = collections.Counter()
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._stale = False
        self.doors: dict[str, Relay] = {}
        self.door_io: dict[str, Any] = {}
        self.reader_door: dict[str, str] = {}
        self.reader_feedback: dict[str, Any] = {}
        self.inputs: list[Input] = []
        self.pin_readers: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.previous_exit: dict[str, Any] = {}
        self.status_server: StatusServer | None = None
        self.central: CentralClient | None = None
        self.sync: BundleSync | None = None
        self.replicator: Replicator | None = None
        self.learned: LearnedCache | None = None
        self.handback: WebhookHandback | None = None
        from bridge.state.late_denials import LateDenials

        self.late_denials = LateDenials()
        self._late_tasks: set[asyncio.Task[Any]] = set()

    @property
    def state_dir(self) -> Path:
        return Path(self.config.bridge.state_dir)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        cfg = self.config
        state_files.restrict_umask()
        state_files.ensure_state_dir(self.state_dir)
        # Doors first: every relay line is driven inactive before anything else can fail.
        if self._pin_factory is None and (cfg.doors or any(r.type == "wiegand" for r in cfg.readers)):
            self._pin_factory = make_pin_factory(cfg.gpio.pin_factory, cfg.gpio.chip)
        for name, door_cfg in cfg.doors.items():
            self.doors[name] = Relay(name, door_cfg, self._pin_factory)
        self.previous_exit = lifecycle.previous_exit(self.state_dir)
        lifecycle.mark_running(self.state_dir)
        from bridge.state import integrity

        quarantined = integrity.check_state_dir(self.state_dir)
        for name in ("grants.db", "audit.db"):
            state_files.tighten(self.state_dir / name)
        self.fingerprint_key = state_files.fingerprint_key(self.state_dir)
        self.cache = GrantCache(self.state_dir / "grants.db", on_replaced=_cache_replaced)
        self.outbox = open_outbox(self.state_dir / "audit.db", cfg.audit.max_events, clock=self.clock,
                                  bridge_id=cfg.bridge.id)
        for q in quarantined:
            self.outbox.append("STATE_DB_QUARANTINED", {"bridgeId": cfg.bridge.id, **q})
        self._load_time_floor()
        self.learned = self._start_learned()
        self.verifier = Verifier(self.cache, policy_from(cfg), offline_codes=self._offline_codes(),
                                 learned=self.learned.recall if self.learned is not None else None,
                                 modes=self._mode_settings(), fingerprint_key=self.fingerprint_key)
        self._start_door_io()
        self._start_emergency()
        if not self._adapters_given:
            self.adapters = self._build_adapters()
        self.upstream.configured = bool(self.adapters) or getattr(cfg.upstream, "central", None) is not None
        site_formats = cfg.site_wiegand_formats()
        for reader in cfg.readers:
            self.reader_door[reader.id] = reader.door
            self.stats.readers[reader.id] = ReaderState(type=reader.type)
            self.inputs.append(create_input(reader, InputContext(self._pin_factory, site_formats)))
            if hasattr(self.inputs[-1], "attach"):  # supervised readers (OSDP): events, health, LED/buzzer
                door = cfg.doors.get(reader.door)
                self.inputs[-1].attach(self, grant_led_s=door.pulse_s if door else 3.0)  # type: ignore[attr-defined]
                self.reader_feedback[reader.id] = self.inputs[-1]
        self.pin_readers = {r.id for r in cfg.readers if getattr(r, "accept_pins", False)}
        for extra in self._extra_inputs:
            if getattr(extra, "accept_pins", False):
                self.pin_readers.add(extra.reader_id)
            self.inputs.append(extra)
            self.reader_door.setdefault(extra.reader_id, next(iter(self.doors), ""))
            self.stats.readers.setdefault(extra.reader_id, ReaderState(type=type(extra).__name__))
        self.outbox.append("BOOT", {"bridgeId": cfg.bridge.id, "firmwareVersion": __version__,
                                    "cacheVersion": self.cache.meta.version, "previousExit": self.previous_exit})
        for inp in self.inputs:
            self._spawn_task(self._run_input(inp), f"input-{inp.reader_id}")
        self._spawn_task(self._refresh_storage_forever(), "storage-view")
        self._spawn_task(self.notifier.watchdog_loop(), "watchdog")
        if any(getattr(a, "has_heartbeat", True) for a in self.adapters):
            self._spawn_task(self._heartbeats_forever(), "heartbeats")
        self._start_central()
        self._start_handback()
        await self._refresh_storage()
        await self._start_status_server()
        from bridge.outward import Outward

        self.outward = Outward.start(self)
        meta = self.cache.meta
        stale = self._stale = self.verifier.is_stale(self.clock())
        self._show_offline()  # _note_staleness only sees changes: stale from the start winks now
        log.info("started", bridge=cfg.bridge.id, version=__version__, mode=cfg.bridge.mode,
                 readers=",".join(i.reader_id for i in self.inputs) or "-", doors=",".join(self.doors) or "-",
                 upstream=",".join(a.name for a in self.adapters) or "none", cache_version=meta.version,
                 stale=stale, previous_exit=self.previous_exit.get("reason"))
        if meta.version == 0:
            log.warning("cache_empty", check="import a bundle (door-bridge grants import FILE) or configure upstream.central sync")
        elif stale:
            log.warning("cache_stale", cache_version=meta.version, policy=cfg.cache.staleness,
                        check="is the central reachable? is the clock right (timedatectl)?")
        self.notifier.ready(self.status_line())
        # Only now may a schedule hold a relay open (never at start or restart, see mode_shell.py).
        self._start_modes()

    def _mode_settings(self) -> Any:
        from verifier.door_mode import Mode, ModeSettings

        site = self.config.site
        return ModeSettings(site.zone(), Mode(site.default_mode), site.pin_timeout_s, self.reader_door)

    def _start_modes(self) -> None:
        from bridge.door.mode_shell import ModeShell

        self.modes = ModeShell(verifier=self.verifier, doors=self.doors, reader_door=self.reader_door,
                               record=self._record_door_event, clock=self.clock, clock_trusted=self.clock_trusted,
                               door_hold=self.emergency.door_hold if self.emergency is not None else None)
        self.modes.armed = True
        self._worker.submit(self.modes.apply)
        self._spawn_task(self._modes_forever(), "door-modes")
        if self.emergency is not None:
            self._worker.submit(self.emergency.read_inputs)  # fire/lockdown/tamper lines as they are now
            if self.central is not None:
                self._spawn_task(self.emergency.poll_forever(self.central), "commands")

    async def _modes_forever(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            if self.emergency is not None:
                await asyncio.wrap_future(self._worker.submit(self.emergency.tick))
            await self.apply_modes()

    def _start_emergency(self) -> None:
        """Emergency inputs, precedence state, door rules and duress (bridge/service/emergency_shell.py)."""
        from bridge.service.emergency_shell import EmergencyShell
        from bridge.state.emergency_store import EmergencyStore, EmergencyStoreError

        cfg = self.config
        try:
            store = EmergencyStore(self.state_dir / "emergency.db")
        except EmergencyStoreError as e:
            raise ConfigError(str(e)) from None
        key = None
        if cfg.upstream.central is not None or cfg.cache.public_key or cfg.cache.public_key_file:
            with contextlib.suppress(ConfigError):
                key = self._public_key()
        self.emergency = EmergencyShell(
            section=cfg.emergency, bridge_id=cfg.bridge.id, doors=self.doors, door_io=self.door_io,
            reader_door=self.reader_door, verifier=self.verifier, store=store,
            append=lambda kind, body: self._record_emergency(kind, body), submit=self._worker.submit,
            clock=self.clock, clock_trusted=self.clock_trusted, tz=cfg.site.zone(), public_key=key,
            pin_factory=self._pin_factory, apply_modes=lambda: self.modes.apply() if self.modes is not None else None)

    def _record_emergency(self, kind: str, body: dict[str, Any]) -> None:
        """On the worker: an emergency event's audit row (the shell writes its own journal line)."""
        try:
            self.outbox.append(kind, body)
        except Exception as e:  # the outbox failing must be loud, never silent
            log.error("audit_append_failed", event=kind, error=str(e)[:200], check="disk space and permissions of the state dir")
        for listener in self.door_event_listeners:
            listener(str(body.get("door") or ""), kind)

    async def apply_modes(self) -> None:
        """Apply the effective door modes now (slot starts and ends; tests call it after moving the clock)."""
        if self.modes is not None:
            await asyncio.wrap_future(self._worker.submit(self.modes.apply))

    def _spawn_task(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _offline_codes(self) -> Any:
        doors: dict[str, tuple[str, bytes]] = {}
        secrets: dict[str, tuple[str, bytes]] = {}
        for name, door in self.config.doors.items():
            if door.passcode_secret_file is None:
                continue
            from bridge.service.config_files import load_passcode_secret
            from bridge.config.secret_files import ApiKeyError

            try:
                secret = load_passcode_secret(door.passcode_secret_file)
            except ApiKeyError as e:
                raise ConfigError(f"doors.{name}.passcode_secret_file: {e}") from None
            secrets[name] = (door.passcode_door_id or name, secret)
        for reader in self.config.readers:
            if reader.door in secrets:
                doors[reader.id] = secrets[reader.door]
        if not doors:
            return None
        from verifier.passcode import offline_code_check

        return offline_code_check(doors)

    def _start_learned(self) -> Any:
        """The learned offline cache (bridge/state/learned.py), for sites whose central ships no bundles."""
        section = self.config.upstream
        if section.frontelio is None and section.sna is None:
            return None
        from bridge.state.learned import LearnedCache, LearnedKeyError, load_secret

        try:
            secret = load_secret(self.state_dir, self.config.offline)
        except LearnedKeyError as e:
            raise ConfigError(f"offline.key_file: {e}") from None
        sna = section.sna
        identities = {"sna": frozenset(v for v in (sna.device_sn, sna.device_id, sna.mac) if v)} if sna else {}
        bridge_id = self.config.bridge.id
        learned = LearnedCache(self.state_dir, self.config.offline, secret=secret, identities=identities,
                               on_refused=lambda r: self.outbox.append("LEARNED_ENTRY_REFUSED", {
                                   "bridgeId": bridge_id, "upstream": r.upstream, "readerId": r.reader_id, "why": r.why}))
        swept = learned.sweep(self.clock())
        log.info("learned_cache", entries=swept.kept, expired_dropped=swept.expired, refused=swept.refused,
                 learn=self.config.offline.learn, max_age_s=self.config.offline.max_age_s)
        return learned

    def _start_handback(self) -> None:
        """Offline decisions to Frontelio's integration webhook, if configured (bridge/central/handback.py)."""
        section = self.config.offline.webhook
        if section is None:
            return
        from bridge.central.handback import WebhookHandback, build_handback
        from bridge.config.secret_files import ApiKeyError

        try:
            self.handback = build_handback(section, self.config.upstream, self.outbox, self.state_dir, clock=self.clock)
        except ApiKeyError as e:
            raise ConfigError(f"offline.webhook: {e}") from None
        assert isinstance(self.handback, WebhookHandback)
        self._spawn_task(self.handback.run(), "handback")

    def _start_door_io(self) -> None:
        for name, door_cfg in self.config.doors.items():
            if door_cfg.pins().keys() == {"relay_pin"}:
                continue  # a bare relay: no door monitor to run
            from bridge.door.monitor import DoorMonitor

            self.door_io[name] = DoorMonitor(self.doors[name], door_cfg, self._pin_factory,
                                        on_event=lambda kind, body, door=name: self._door_event(door, kind, body))

    def _door_event(self, door: str, kind: str, body: dict[str, Any]) -> None:
        """From gpiozero's callback threads: record through the worker so order and fsync hold."""
        self._worker.submit(self._record_door_event, door, kind, body)

    def _record_door_event(self, door: str, kind: str, body: dict[str, Any]) -> None:
        try:
            self.outbox.append(kind, {"bridgeId": self.config.bridge.id, "door": door, **body})
        except Exception as e:  # the outbox failing must be loud, never silent
            log.error("audit_append_failed", door=door, event=kind, error=str(e)[:200],
                      check="disk space and permissions of the state dir")
        log.info("door_event", door=door, type=kind)
        for listener in self.door_event_listeners:
            listener(door, kind)

    def _build_adapters(self) -> list[Any]:
        section = self.config.upstream
        if not (section.frontelio or section.sna or section.digital_id):
            return []
        from bridge.config.secret_files import ApiKeyError
        from bridge.upstream.factory import build_adapters

        try:
            return build_adapters(section, now=self.clock)
        except ApiKeyError as e:
            raise ConfigError(f"upstream: {e}") from None

    # --- trusted time ---------------------------------------------------------------------------

    def _trusted_now(self) -> datetime:
        wall = self._wall_clock()
        reading = self.trusted_time.read(to_ms(wall), time.monotonic())
        self.time_reading = reading
        return wall if reading.trusted else from_ms(reading.instant_ms) or wall

    def _clock_is_trusted(self) -> bool:
        self._trusted_now()
        return self.time_reading.trusted

    def _load_time_floor(self) -> None:
        """The floor at start: the newest signed issue time, the last audit event, the saved floor."""
        from bridge.state.json_file import read_json

        candidates = [self.cache.meta.issued_at_ms]
        last = self.outbox.recent(1)
        if last:
            candidates.append(to_ms(datetime.fromisoformat(last[0].at.replace("Z", "+00:00"))))
        with contextlib.suppress(OSError, ValueError, TypeError):
            saved = read_json(self.state_dir / TIME_FLOOR_FILE)
            if saved is not None:
                candidates.append(int(saved["at_ms"]))
        self.trusted_time.raise_floor(max(candidates), time.monotonic())

    def _watch_time(self) -> None:
        """Periodic (storage refresher): raise the floor from the cache, save it, and tell every
        change of trust and every jump of the wall clock to the journal and the audit log."""
        from bridge.state.json_file import write_json

        mono = time.monotonic()
        self.trusted_time.raise_floor(self.cache.meta.issued_at_ms, mono)
        now = self._trusted_now()
        r = self.time_reading
        if r.jump_ms:
            log.warning("clock_jumped", by_s=round(r.jump_ms / 1000), now=now.isoformat(timespec="seconds"),
                        check="NTP stepping the clock after boot is normal; a jump nobody made is not (timedatectl)")
        if r.trusted != self._clock_was_trusted:
            self._clock_was_trusted = r.trusted
            body = {"bridgeId": self.config.bridge.id, "wall": self._wall_clock().isoformat(timespec="seconds"),
                    "floor": iso(from_ms(self.trusted_time.floor_now(mono))),
                    "behindS": round(r.behind_ms / 1000)}
            if r.trusted:
                log.info("clock_trusted", **body)
            else:
                log.warning("clock_untrusted", **body, check="the Pi has no RTC: is NTP reachable (timedatectl)? "
                            "Decisions use the floor (newest signed bundle, last audit event) until the clock catches up")
            self._worker.submit(self.outbox.append, "CLOCK_TRUSTED" if r.trusted else "CLOCK_UNTRUSTED", body)
        if r.trusted and mono - self._floor_saved_mono >= TIME_FLOOR_SAVE_S:
            self._floor_saved_mono = mono
            with contextlib.suppress(OSError):
                write_json(self.state_dir / TIME_FLOOR_FILE, {"at_ms": to_ms(now)})

    def _start_central(self) -> None:
        """Bundle sync and audit replication with the central (bridge protocol), if configured."""
        section = self.config.upstream.central
        if section is None:
            return
        from bridge.central.replicator import Replicator, run_replication
        from bridge.central.sync import BundleSync, run_sync
        from bridge.config.secret_files import ApiKeyError
        from bridge.upstream.central import build_central

        settings = self.config.upstream.http
        try:
            self.central = build_central(section, settings, bridge_id=self.config.bridge.id)
        except ApiKeyError as e:
            raise ConfigError(f"upstream.central: {e}") from None
        self.sync = BundleSync(self.central, section, settings, state_dir=self.state_dir,
                               public_key=self._public_key(), clock=self.clock, audience=(self.config.bridge.id,))
        self.replicator = Replicator(self.central, self.outbox, section, settings, clock=self.clock)
        self._spawn_task(run_sync(self.sync), "sync")
        self._spawn_task(run_replication(self.replicator), "replication")

    def _public_key(self, config: Config | None = None) -> Ed25519PublicKey:
        return bundle_public_key(config or self.config, needed="when upstream.central is configured")

    async def _start_status_server(self) -> None:
        from bridge.service.status_socket import StatusServer

        path = self.status_socket_path()
        try:
            self.status_server = StatusServer(path, self.snapshot)
            await self.status_server.start()
        except OSError as e:
            self.status_server = None
            log.warning("status_socket_unavailable", path=str(path), error=str(e)[:120],
                        check="RuntimeDirectory= in the unit, or permissions of the state dir")

    def status_socket_path(self) -> Path:
        from bridge.service.status_socket import socket_path

        return socket_path(state_dir=self.state_dir)

    async def stop(self, reason: str = "requested") -> None:
        if self._stopped.is_set():
            return
        self.notifier.stopping("stopping")
        for door in self.doors.values():
            door.release()
        if self.outward is not None:
            with contextlib.suppress(Exception):
                await self.outward.stop()
        for task in self._tasks + list(self._scan_tasks) + list(self._late_tasks):
            if task.get_name().startswith("scan"):
                continue
            task.cancel()
        # Scans already taken are finished, never dropped: their audit rows must land.
        if self._scan_tasks:
            await asyncio.wait(list(self._scan_tasks), timeout=2.0)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.replicator is not None and self.replicator.state.online:
            # Flush: one bounded attempt to hand the central what is pending. Whatever does not
            # make it stays in audit.db (already fsync'd) for the next start.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.replicator.drain(), timeout=1.5)
        if self.status_server is not None:
            with contextlib.suppress(Exception):
                await self.status_server.stop()
        for adapter in self.adapters:
            with contextlib.suppress(Exception):
                await adapter.aclose()
        if self.central is not None:
            with contextlib.suppress(Exception):
                await self.central.aclose()
        if self.handback is not None:
            with contextlib.suppress(Exception):
                await self.handback.aclose()
        if self.sync is not None:
            with contextlib.suppress(Exception):
                self.sync.close()
        await asyncio.wrap_future(self._worker.submit(self._close_storage))
        self._worker.shutdown()
        for io in self.door_io.values():
            io.close()
        if self.emergency is not None:
            self.emergency.close()
        if self.modes is not None:
            self.modes.armed = False
        for door in self.doors.values():
            door.close()
        lifecycle.mark_stopped(self.state_dir)
        self._stopped.set()
        log.info("stopped", bridge=self.config.bridge.id, reason=reason)

    def _close_storage(self) -> None:
        self.outbox.close()
        self.cache.close()
        if self.learned is not None:
            self.learned.close()
        if self.emergency is not None:
            self.emergency.store.close()

    async def quiesce(self) -> None:
        """Wait until every scan handed to the daemon so far has been decided and recorded."""
        await asyncio.sleep(0)
        while self._scan_tasks:
            await asyncio.wait(list(self._scan_tasks))
        await asyncio.wrap_future(self._worker.submit(lambda: None))

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _run_input(self, inp: Input) -> None:
        """Run a reader for ever: a failure is an error in the journal and in `status`/STATUS=,
        then a retry with back-off (a cable or driver may come back; a bug keeps failing, loudly)."""
        state = self.stats.readers.setdefault(inp.reader_id, ReaderState())
        delay = READER_RETRY_FIRST_S
        while True:
            healthy = asyncio.get_running_loop().call_later(READER_HEALTHY_AFTER_S, self._reader_recovered, inp.reader_id)
            try:
                await inp.run(self.emit)
                if getattr(inp, "finite", False):  # standard input at its end: nothing failed
                    log.info("reader_input_ended", reader=inp.reader_id)
                    return
                error = "the reader stopped reading (its input ended)"
            except asyncio.CancelledError:
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}"[:200]
            finally:
                healthy.cancel()
            if not state.failed:
                delay = READER_RETRY_FIRST_S
            state.last_error, state.failures = error, state.failures + 1
            log.error("reader_failed", reader=inp.reader_id, error=error, failures=state.failures, retry_s=delay,
                      check="reader configuration, cable and device permissions; door-bridge doctor lists the devices it can open")
            working = [r for r, st in self.stats.readers.items() if not st.failed]
            if not working:
                log.error("no_reader_working", failed=",".join(sorted(self.stats.readers)),
                          effect="no credential can be read; REX, door monitoring and the audit trail go on; the relay stays released",
                          check="journalctl -u door-bridge -p err for each reader_failed; door-bridge doctor")
            self.notifier.status(self.status_line())
            await asyncio.sleep(delay)
            delay = min(delay * 2, READER_RETRY_MAX_S)

    def _show_offline(self, upstream_ok: bool | None = None) -> None:
        """Every LED a technician looks at — the door's GPIO LED and the readers' own (OSDP) —
        winks between decisions while the door decides offline: the upstream unreachable *or* the
        cache stale. One rule for both, told at start and on every change of either input."""
        up = self.upstream.online if upstream_ok is None else upstream_ok
        offline = self._stale or up is False
        for io in self.door_io.values():
            with contextlib.suppress(Exception):
                io.set_offline(offline)
        for reader in self.reader_feedback.values():
            with contextlib.suppress(Exception):
                reader.set_offline(offline)

    # --- supervised readers (bridge.inputs.osdp_reader.ReaderSink) --------------------------------

    def reader_event(self, reader_id: str, kind: str, body: dict[str, Any]) -> None:
        """READER_OFFLINE/ONLINE, READER_TAMPER, READER_POWER, OSDP_KEY_INSTALLED: audit rows,
        recorded through the worker like door events."""
        door = self.reader_door.get(reader_id)
        self._worker.submit(self._record_reader_event, reader_id, door, kind, body)

    def _record_reader_event(self, reader_id: str, door: str | None, kind: str, body: dict[str, Any]) -> None:
        try:
            self.outbox.append(kind, {"bridgeId": self.config.bridge.id, "readerId": reader_id, "door": door, **body})
        except Exception as e:  # the outbox failing must be loud, never silent
            log.error("audit_append_failed", reader=reader_id, event=kind, error=str(e)[:200],
                      check="disk space and permissions of the state dir")
        log.info("reader_event", reader=reader_id, event=kind)

    def reader_offline(self, reader_id: str, problem: str | None) -> None:
        """On the event loop: a supervised reader's device stopped answering (problem) or is back (None)."""
        state = self.stats.readers.setdefault(reader_id, ReaderState())
        if state.offline == problem:
            return
        state.offline = problem
        self.notifier.status(self.status_line())

    def _reader_recovered(self, reader_id: str) -> None:
        state = self.stats.readers.get(reader_id)
        if state is not None and state.last_error is not None:
            state.last_error = None
            log.info("reader_recovered", reader=reader_id, failures=state.failures)
            self.notifier.status(self.status_line())

    def health(self) -> dict[str, Any]:
        """What makes this door degraded (docs/operations.md): `status` exits 3 when not ok."""
        failed = sorted(r for r, st in self.stats.readers.items() if st.failed)
        problems = [f"reader {r} offline: {self.stats.readers[r].offline}" if self.stats.readers[r].last_error is None
                    else f"reader {r} failed" for r in failed]
        if self.emergency is not None:
            problems += [f"{a.replace('_', ' ')} input in alarm" for a in sorted(self.emergency.emergency.alarms)]
        return {"state": "degraded" if problems else "ok", "problems": problems}

    def _health_prefix(self) -> str:
        failed = sorted(r for r, st in self.stats.readers.items() if st.failed)
        if not failed:
            return ""
        broken = [r for r in failed if self.stats.readers[r].last_error is not None]
        offline = [r for r in failed if r not in broken]
        what = "; ".join(part for part in (f"{', '.join(broken)} failed" if broken else "",
                                            f"{', '.join(offline)} offline" if offline else "") if part)
        if len(failed) == len(self.stats.readers):
            return f"DEGRADED: no reader working ({what}); "
        return f"DEGRADED: reader {what}; "

    # --- reload ----------------------------------------------------------------------------------

    def reload(self, new: Config) -> list[str]:
        """Apply what can change without touching hardware or connections (policy, staleness,
        JWT settings, log level, relay pulse lengths, mode); return the sections that need a
        restart (bridge/service/reload_plan.py decides which). Scans keep flowing: nothing here
        stops an input."""
        plan = plan_reload(self.config, new)
        for name, section in plan.pulses.items():
            self.doors[name].cfg = section
        self._worker.submit(self._swap_policy, policy_from(new), plan.guards_changed)
        self._rotate_bundle_key(new)
        if self.learned is not None:
            self._worker.submit(setattr, self.learned, "section", plan.offline)
        from bridge.service import logsetup

        logsetup.configure(new.bridge.log_level, new.bridge.log_format)
        self.config = plan.running
        return list(plan.restart)

    def _rotate_bundle_key(self, new: Config) -> None:
        """A new pinned key takes effect at once for every later sync: keeping the old one until a
        restart would let a bundle signed with a key the site just retired (perhaps leaked) apply.
        `grants import` reads the config file itself, so it has the new key already."""
        if self.sync is None:
            return
        from verifier.bundle import public_key_text

        key = self._public_key(new)
        if public_key_text(key) != public_key_text(self.sync.public_key):
            self.sync.public_key = key
            log.warning("bundle_key_rotated", key=public_key_text(key)[:12] + "…",
                        check="bundles signed with the previous key are refused from now on; "
                              "the central must sign with the new key")

    def _swap_policy(self, policy: Policy, guards_changed: bool) -> None:
        """On the decision worker, between two decisions. New replay or rate limits start with an
        empty memory sized by them (a shorter window must not keep what the longer one saw)."""
        self.verifier.policy = policy
        if guards_changed:
            self.verifier.replays = ReplayMemory(int(policy.replay_window_s * 1000))
            self.verifier.limiter = RateLimiter(policy.rate_limit_denies, int(policy.rate_limit_window_s * 1000),
                                                int(policy.rate_limit_cooldown_s * 1000))

    # --- the scan path --------------------------------------------------------------------------

    def emit(self, scan: Scan) -> None:
        """Thread-safe: inputs call this from their own threads."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._spawn_scan, scan)

    def _spawn_scan(self, scan: Scan) -> None:
        if len(self._scan_tasks) >= MAX_SCANS_IN_FLIGHT or self._in_flight[scan.reader_id] >= MAX_SCANS_IN_FLIGHT_PER_READER:
            # Far beyond any real door's traffic: a stuck reader or an attack. Memory stays
            # bounded, and the drop is counted into the audit log, never silent.
            if self.dropped_scans == 0:
                log.error("scans_dropped_overload", reader=scan.reader_id, in_flight=len(self._scan_tasks),
                          check="a reader sending continuously (stuck scanner, loop in a QR)? door-bridge status")
            self.dropped_scans += 1
            self.dropped_by_reader[scan.reader_id] += 1
            return
        task = asyncio.create_task(self.handle(scan), name=f"scan-{scan.reader_id}")
        self._scan_tasks.add(task)
        self._in_flight[scan.reader_id] += 1
        task.add_done_callback(self._scan_done)

    def _scan_done(self, task: asyncio.Task[Any]) -> None:
        self._scan_tasks.discard(task)
        self._in_flight[task.get_name().removeprefix("scan-")] -= 1
        if task.cancelled() or task.exception() is None:
            return
        # Nothing was pulsed (the relay moves only after the batch's audit rows are committed).
        e = task.exception()
        log.error("decision_failed", reader=task.get_name().removeprefix("scan-"), error=f"{type(e).__name__}: {e}"[:200],
                  relay="not pulsed", check="disk space and permissions of the state dir (audit.db); door-bridge doctor")

    async def handle(self, scan: Scan) -> AccessDecision:
        started = scan.at_monotonic or time.monotonic()
        credential = parse(scan.raw, scan.hint)
        if isinstance(credential, Pin) and scan.hint != "pin" and scan.reader_id not in self.pin_readers:
            # A QR / wedge / serial scanner is not a faster keypad: it types a whole line at once.
            credential = Malformed("a PIN from a scanner that does not take PINs (set accept_pins on a wedge keypad)")
        source = presented_source(credential, scan.source)
        online: AccessDecision | None = None
        asked: str | None = None
        adapter = await self._adapter_to_ask(credential, source)
        if adapter is not None:
            online = await self._ask(adapter, credential, scan.reader_id, source)
            asked = adapter.name
        job = _ScanJob(scan, credential, source, online, started, asked)
        return await asyncio.wrap_future(self._worker.submit_batchable(job))

    async def _adapter_to_ask(self, credential: Credential, source: Source) -> Any:
        """The upstream this scan goes to, or None for the cache alone. `online-first` asks for
        everything an adapter accepts; `local-first` asks for what the cache cannot judge (Digital ID
        tokens, an invite code the cache does not hold) and whatever an upstream decides alone (SNA)."""
        mode = self.config.bridge.mode
        if mode == "local-only":
            return None
        adapter = next((a for a in self.adapters if a.accepts(credential, source)), None)
        if adapter is None or mode == "online-first" or getattr(adapter, "decides_alone", False) or needs_online(credential):
            return adapter
        if isinstance(credential, InviteCode):
            knows = await asyncio.wrap_future(self._worker.submit(self._cache_holds_invite, credential))
            return None if knows else adapter
        return None

    def _cache_holds_invite(self, credential: InviteCode) -> bool:
        """On the worker: can the (fresh) cache judge this invite code itself?"""
        from verifier.hashing import hash_invite

        return not self.verifier.is_stale(self.clock()) and self.cache.visitor(hash_invite(credential.code)) is not None

    async def _ask(self, adapter: Any, credential: Credential, reader_id: str, source: Source) -> AccessDecision | None:
        """One attempt within the budget. A request still running when the budget ends is left to
        finish (up to `late_answer_s`, the adapter's own bound): a late DENY is still recorded."""
        from bridge.upstream.errors import UpstreamError

        budget = self.config.upstream.http.verify_budget_s
        task = asyncio.ensure_future(adapter.verify(credential, reader_id, source))
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            self._late_tasks.add(task)
            task.add_done_callback(lambda t: self._late_answer(t, credential))
            self._mark_upstream(False, f"{adapter.name}: no answer within the {budget} s verify budget",
                                check="the central is slow or unreachable from the Pi; decisions continue from the "
                                      "cache (raise upstream.http.verify_budget_s if the central is always this slow)")
            return None
        try:
            decision = task.result()
        except UpstreamError as e:
            self._mark_upstream(False, str(e), check=_check_for(e), name=adapter.name)
            return None
        self._mark_upstream(True, name=adapter.name)
        return decision

    def _late_answer(self, task: asyncio.Task[Any], credential: Credential) -> None:
        """On the loop: the answer to a request the scan stopped waiting for. A late GRANT changes
        nothing (the cache has decided); a late DENY is recorded and held against the credential."""
        self._late_tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        decision: AccessDecision = task.result()
        if not decision.granted:
            self._worker.submit(self._record_late_denial, credential, decision)

    def _record_late_denial(self, credential: Credential, denial: AccessDecision) -> None:
        from bridge.state.late_denials import credential_key
        from verifier.timeutil import from_ms, iso

        until = self.late_denials.note(credential_key(credential), denial, to_ms(self.clock()))
        held = iso(from_ms(until)) if until is not None else None
        self.outbox.append("LATE_UPSTREAM_DENY", {**denial.as_wire(), "bridgeId": self.config.bridge.id,
                                                  "heldUntil": held})
        log.warning("upstream_late_deny", reader=denial.reader_id, reason=denial.reason.value if denial.reason else "-",
                    cred=denial.fingerprint, held_until=held or "not held (the reason may change)",
                    check="the central denied after the verify budget, so the cache decided that scan; "
                          "see door-bridge events tail; raise upstream.http.verify_budget_s if this repeats")

    def _mark_upstream(self, ok: bool, error: str | None = None, check: str | None = None,
                      name: str | None = None) -> None:
        """Logged on every change: one warning when the upstream is lost, one more whenever the
        cause of failure changes (401 → 500, DNS → refused), one info line when it is back."""
        up = self.upstream
        up.configured = True
        if name is not None:
            seen = up.by_name.setdefault(name, UpstreamSeen(ok))
            seen.online = ok
            if ok:
                seen.last_success = self.clock()
        if ok != up.online:
            self._show_offline(upstream_ok=ok)
        if ok and up.online is not True:
            if up.online is False:
                log.info("upstream_restored", offline_since=up.since.isoformat(timespec="seconds") if up.since else "-")
            up.online, up.since, up.last_error = True, self.clock(), None
        elif not ok:
            check = check or "network/DNS from the Pi, the upstream URL and TLS; decisions continue from the cache"
            if up.online is not False:
                log.warning("upstream_lost", error=error or "-", mode=self.config.bridge.mode, check=check)
                up.online, up.since = False, self.clock()
            elif _cause(error) != _cause(up.last_error):
                log.warning("upstream_error_changed", error=error or "-", previous=up.last_error or "-", check=check)
            up.last_error = error

    def _decide_batch(self, jobs: list[_ScanJob]) -> list[Any]:
        """On the worker thread: decide each scan, commit all their audit rows at once, then act."""
        decisions: list[AccessDecision] = []
        decided: list[str] = []
        states = self.emergency.door_states() if self.verifier.rules is not None else None
        for job in jobs:
            decision, how = self._decide_one(job, states)
            decisions.append(decision)
            decided.append(how)
            if states is not None and decision.granted and (name := self.reader_door.get(job.scan.reader_id)) in states:
                # Pulsed after this batch: a second GRANT in the same batch sees this door as unlocked.
                states[name] = replace(states[name], unlocked=True)
        self._note_staleness()
        doors = [self.reader_door.get(job.scan.reader_id, "") for job in jobs]
        # The rows that explain the relay go to disk before the relay moves; if they cannot be
        # written, nothing moves (fail-secure) and every waiting scan gets the error.
        rows: list[tuple[str, dict[str, Any]]] = [
            ("VERIFY", {**d.as_wire(), "bridgeId": self.config.bridge.id, "door": name if name in self.doors else None})
            for d, name in zip(decisions, doors)]
        for d, name in zip(decisions, doors):
            if d.duress and not d.replay:
                rows.append(("DURESS", {"bridgeId": self.config.bridge.id, "door": name or None, "readerId": d.reader_id,
                                        "userId": d.user_id, "userName": d.user_name,
                                        "credentialFingerprint": d.fingerprint}))
                log.warning("duress_alarm", reader=d.reader_id, door=name or "-", user=d.user_id or "-",
                            check="a holder opened this door with the duress PIN: someone may be forcing them. "
                                  "Follow the site's duress procedure; do not call the holder")
        for lock in self.verifier.take_lockouts():
            rows.append(("READER_RATE_LIMITED", lockout_event(lock, self.config.bridge.id)))
            log.warning("reader_rate_limited", reader=lock.reader_id, bucket="keypad" if lock.keypad else "other",
                        denies=lock.denies, cooldown_s=lock.cooldown_s,
                        check="someone guessing codes at this reader? door-bridge events tail; the camera")
        self.outbox.append_many(rows)
        if self.emergency is not None:
            self.emergency.flush()  # the admin credential's lockdown, anti-passback presence and violations
        for job, decision, name, how in zip(jobs, decisions, doors, decided):
            door = self.doors.get(name)
            pulse = decision.granted and not decision.replay and door is not None and not door.held
            io = self.door_io.get(name)
            if pulse:
                assert door is not None
                if io is not None:
                    io.authorised("grant")
                door.pulse()
            if io is not None:
                with contextlib.suppress(Exception):
                    io.feedback(decision)
            reader_out = self.reader_feedback.get(job.scan.reader_id)
            if reader_out is not None:
                with contextlib.suppress(Exception):
                    reader_out.feedback(decision)
            self._account(decision, (time.monotonic() - job.started) * 1000, door, pulse, how)
        if self.modes is not None:
            self.modes.apply()  # a first-person-in GRANT unlocks its door at once
        return decisions

    def _learn(self, upstream: str, credential: Credential, decision: AccessDecision) -> None:
        """Never in the way of the online answer: a learned-cache write that fails is logged."""
        try:
            self.learned.observe(upstream, credential, decision, list(self.reader_door), self.clock())
        except Exception as e:
            log.error("learned_write_failed", upstream=upstream, decision=decision.decision.value,
                      error=f"{type(e).__name__}: {e}"[:200],
                      check="disk space and permissions of learned.db in the state dir; a DENY not written "
                            "means an earlier learned GRANT may still open offline until its max_age")

    def _decide_one(self, job: _ScanJob, doors: dict[str, Any] | None = None) -> tuple[AccessDecision, str]:
        """(decision, how it was decided: online | late_deny | cache). Whoever answers, the
        verifier's replay window and rate limiter judge the presentation too."""
        from bridge.state.late_denials import credential_key

        now = self.clock()
        key = credential_key(job.credential)
        if job.online is not None:
            self._online_answered(key, job)
            late = None
        else:
            late = self.late_denials.verdict(key, to_ms(now))
        decision = self.verifier.decide(job.credential, job.scan.reader_id, job.source, now, verdict=job.online or late,
                                        clock_trusted=self.clock_trusted(), doors=doors)
        held = late is not None and not decision.online and decision.upstream_reason == late.upstream_reason
        return decision, "late_deny" if held else decision.decided

    def _online_answered(self, key: str, job: _ScanJob) -> None:
        """The one place an online answer is taken in (worker thread), before the door's own
        guards judge the presentation: the central has spoken again, so an older late denial for
        this credential no longer stands, and the learned cache hears the central's word."""
        assert job.online is not None
        self.late_denials.forget(key)
        if self.learned is not None and job.upstream is not None:
            self._learn(job.upstream, job.credential, replace(job.online, cache_version=self.cache.meta.version))

    def _note_staleness(self) -> None:
        """One warning when the cache goes stale while running (the clock passes the bundle's
        not_after), one info line when a fresh bundle ends it — with either staleness policy."""
        stale = self.verifier.is_stale(self.clock())
        if stale == self._stale:
            return
        self._stale = stale
        self._show_offline()
        meta = self.cache.meta
        if stale:
            from verifier.timeutil import from_ms, iso

            log.warning("cache_stale", cache_version=meta.version, not_after=iso(from_ms(meta.not_after_ms)),
                        policy=self.config.cache.staleness,
                        effect="every decision is CACHE_STALE" if self.config.cache.staleness == "deny" else "still deciding",
                        check="is the central reachable (door-bridge status)? is the clock right (timedatectl)?")
        else:
            log.info("cache_fresh", cache_version=meta.version)

    def _account(self, d: AccessDecision, latency_ms: float, door: Relay | None, pulsed: bool, how: str = "cache") -> None:
        s = self.stats
        s.decisions += 1
        s.grants += d.granted
        s.online_decisions += d.online
        s.learned_decisions += d.learned
        r = s.readers.setdefault(d.reader_id, ReaderState())
        r.scans += 1
        r.last_scan_at = self.clock().isoformat(timespec="seconds")
        r.last_decision, r.last_reason = d.decision.value, d.reason.value if d.reason else None
        log.info(
            "decision", reader=d.reader_id, door=door.name if door else "-", source=d.source.value, decision=d.decision.value,
            reason=d.reason.value if d.reason else "-", latency_ms=round(latency_ms, 2),
            cache_version=d.cache_version, decided=how,
            upstream=self.upstream.label, replay=d.replay, cred=d.fingerprint, user=d.user_id or "-",
            zone=d.zone_id or d.zone_name or "-",
            relay=("held" if door.held else "pulsed" if pulsed else "idle") if door else "none", door_mode=d.door_mode or "-",
        )
        for listener in self.decision_listeners:
            listener(d, latency_ms)

    # --- background ------------------------------------------------------------------------------

    async def _heartbeats_forever(self) -> None:
        from bridge.central.heartbeat import run_heartbeats

        reader_ids = [r.id for r in self.config.readers] or [self.config.bridge.id]
        await run_heartbeats(self.adapters, reader_ids, self.config.upstream.http, on_result=self._heartbeat_result)

    def _heartbeat_result(self, adapter: UpstreamAdapter, reader_id: str, error: UpstreamError | None) -> None:
        if error is None:
            self.upstream.last_heartbeat = self.clock()
            self._mark_upstream(True, name=adapter.name)
        else:
            self._mark_upstream(False, str(error), check=_check_for(error),  # names the heartbeat path
                                name=adapter.name)

    async def _refresh_storage_forever(self, every_s: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await self._refresh_storage()
            self._worker.submit(self._note_staleness)  # an idle door also notices not_after passing
            with contextlib.suppress(Exception):
                self._watch_time()
            if self.dropped_scans:
                dropped, self.dropped_scans = self.dropped_scans, 0
                by_reader, self.dropped_by_reader = dict(self.dropped_by_reader), collections.Counter()
                self._worker.submit(self.outbox.append, "SCANS_DROPPED",
                                    {"bridgeId": self.config.bridge.id, "count": dropped, "byReader": by_reader,
                                     "reason": f"more than {MAX_SCANS_IN_FLIGHT} scans waiting, or "
                                               f"{MAX_SCANS_IN_FLIGHT_PER_READER} at one reader"})
            if self.replicator is not None and not self.adapters:
                rs = self.replicator.state
                if rs.online is not None and rs.online != self.upstream.online:
                    self._mark_upstream(rs.online, rs.last_error)
            self.notifier.status(self.status_line())

    async def _refresh_storage(self) -> None:
        await asyncio.to_thread(self._read_storage)

    def _read_storage(self) -> None:
        """Own read-only connections (the stores' helpers): never contends with the decision worker's writers."""
        from bridge.state.outbox import oldest_unsent_at
        from verifier.cache import count_credentials

        view = self.storage
        view.oldest_pending_at = oldest_unsent_at(self.state_dir / "audit.db")
        version = self.cache.meta.version
        if version != view.counted_version:
            view.grants = count_credentials(self.state_dir / "grants.db")
            view.counted_version = version
        if self.learned is not None:
            view.learned = {name: {"entries": u.entries, "oldest_learned_at": iso_seconds(from_ms(u.oldest_learned_ms)) if u.oldest_learned_ms is not None else None}
                            for name, u in sorted(self.learned.summary().items())}

    # --- status ----------------------------------------------------------------------------------

    def status_line(self) -> str:
        meta = self.cache.meta
        age = _age_s(meta.issued_at_ms / 1000, self.clock()) if meta.version else None
        r = self.time_reading
        clock = "" if r.trusted else f"CLOCK UNTRUSTED (behind the floor by {_human(r.behind_ms / 1000)}, deciding with the floor); "
        emergency = self.emergency.emergency.status_words() if self.emergency is not None else ""
        emergency = f"{emergency}; " if emergency else ""
        return (f"{emergency}{self._health_prefix()}{clock}{self.config.bridge.mode}; upstream {self.upstream.label}; cache v{meta.version}"
                f"{f' age {_human(age)}' if age is not None else ''}; outbox {self.outbox.depth()}; "
                f"{self.stats.decisions} decisions")

    def snapshot(self) -> dict[str, Any]:
        from verifier.timeutil import from_ms, iso

        now = self.clock()
        meta = self.cache.meta
        up = self.upstream
        oldest = self.storage.oldest_pending_at
        return {
            "bridge_id": self.config.bridge.id, "version": __version__, "mode": self.config.bridge.mode,
            "started_at": self.stats.started_at.isoformat(timespec="seconds"), "now": now.isoformat(timespec="seconds"),
            "previous_exit": self.previous_exit.get("reason"), "health": self.health(),
            "clock": {"trusted": self.time_reading.trusted, "behind_floor_s": round(self.time_reading.behind_ms / 1000),
                      "floor": iso(from_ms(self.trusted_time.floor_now(time.monotonic()))),
                      "wall": self._wall_clock().isoformat(timespec="seconds")},
            "mqtt": self.outward.mqtt_status() if self.outward is not None else None,
            "upstream": ({"online": bool(up.online), "since": iso_seconds(up.since), "last_heartbeat": iso_seconds(up.last_heartbeat),
                          "last_error": up.last_error} if up.configured else {"state": "none (standalone)"}),
            "cache": {"version": meta.version, "issued_at": iso(from_ms(meta.issued_at_ms)) if meta.version else None,
                      "age_s": _age_s(meta.issued_at_ms / 1000, now) if meta.version else None,
                      "not_after": iso(from_ms(meta.not_after_ms)), "grants": self.storage.grants,
                      "stale": meta.version == 0 or now.timestamp() * 1000 >= meta.not_after_ms},
            "outbox": {"depth": self.outbox.depth(),
                       "oldest_age_s": _age_s(datetime.fromisoformat(oldest.replace("Z", "+00:00")).timestamp(), now) if oldest else None},
            "central": ({"sync": self.sync.state.as_status(), "replication": self.replicator.state.as_status(now)}
                        if self.sync is not None else None),
            "decisions": {"total": self.stats.decisions, "granted": self.stats.grants, "online": self.stats.online_decisions,
                          "learned": self.stats.learned_decisions},
            "learned": ({"enabled": self.config.offline.learn, "entries": self.learned.store.count(),
                         "max_entries": self.config.offline.max_entries, "refused": self.learned.refused,
                         "upstreams": self.storage.learned}
                        if self.learned is not None else None),
            "handback": self.handback.state.as_status() if self.handback is not None else None,
            "emergency": self.emergency.status() if self.emergency is not None else None,
            "readers": {rid: {"type": r.type, "last_scan_at": r.last_scan_at, "last_decision": r.last_decision,
                              "last_reason": r.last_reason, "scans": r.scans, "state": "failed" if r.failed else "ok",
                              "last_error": r.last_error, "failures": r.failures, "offline": r.offline}
                        for rid, r in self.stats.readers.items()},
            "doors": {name: {**(self.door_io[name].state() if name in self.door_io else
                                {"relay": "energised" if door.energised else "released", "position": "unknown", "alarm": None}),
                             **(self.modes.view.get(name, {}) if self.modes is not None else {})}
                      for name, door in self.doors.items()},
        }


_REQUEST = re.compile(r" (?:GET|POST|PUT|PATCH|DELETE) /\S*:")


def _cause(error: str | None) -> str | None:
    """A failure's cause without the request it happened on: a verify and a heartbeat failing
    for the same reason are one cause, a 401 and a 500 (or DNS and refused) are two."""
    return _REQUEST.sub("", error) if error else error


def _check_for(error: Exception) -> str:
    """What a technician checks for this upstream failure: the adapter's own hint for a refusal,
    the answer's shape for a protocol error, the network for the rest."""
    from bridge.upstream.errors import UpstreamProtocolError, UpstreamRejected

    if isinstance(error, UpstreamRejected):
        return error.hint
    if isinstance(error, UpstreamProtocolError):
        return ("the upstream answered, but not in its documented format: check base_url and the path point at "
                "that service (not a proxy or captive portal); decisions continue from the cache")
    return "network/DNS from the Pi, the upstream URL and TLS; decisions continue from the cache"


def _age_s(epoch_s: float, now: datetime) -> float:
    return round(now.timestamp() - epoch_s, 1)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
