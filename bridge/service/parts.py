"""Building the door's parts from the configuration, in the order that keeps it safe.

The relays come first, each driven inactive before anything else can fail (and into the
daemon's own `doors` dict, so an error later on still finds them to release). Then the state
files, the stores, the verifier, the door monitors, the emergency shell, the upstream adapters,
the central's clients and the readers. Every key or secret the configuration names is loaded
here, and each loader's error becomes one `ConfigError` naming its key path (`_config_error`),
so `door-bridge run` exits 2 with `FILE: key.path: problem` whichever file is bad.

Nothing here starts a task or talks to the network: the daemon orders that, once it holds the parts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import structlog

from bridge.config import Config, ConfigError
from bridge.door.pins import make_pin_factory
from bridge.door.relay import Relay
from bridge.inputs.base import Input, InputContext
from bridge.inputs.registry import create_input
from bridge.service.audit_events import DoorEventListener, EventRecorder, Submit
from bridge.service.clock_watch import Clock, ClockWatch
from bridge.service.config_files import bundle_public_key
from bridge.state import files as state_files
from bridge.state import lifecycle
from bridge.state.outbox import Outbox, open_outbox
from verifier.cache import GrantCache
from verifier.decide import Policy, Verifier
from verifier.types import AccessDecision

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from gpiozero.pins import Factory

    from bridge.central.handback import WebhookHandback
    from bridge.central.replicator import Replicator
    from bridge.central.sync import BundleSync
    from bridge.door.mode_shell import ModeShell
    from bridge.door.monitor import DoorMonitor
    from bridge.inputs.osdp_reader import ReaderSink
    from bridge.service.emergency_shell import EmergencyShell
    from bridge.state.learned import LearnedCache
    from bridge.upstream.adapter import UpstreamAdapter
    from bridge.upstream.central import CentralClient
    from verifier.door_mode import ModeSettings
    from verifier.decide import OfflineCodeCheck

log = structlog.get_logger()


class SupervisedReader(Protocol):
    """A reader with its own health, LED and buzzer (OSDP): told every decision and the offline state."""

    def attach(self, sink: ReaderSink, *, grant_led_s: float = 3.0) -> None: ...

    def feedback(self, decision: AccessDecision) -> None: ...

    def set_offline(self, offline: bool) -> None: ...


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
class Parts:
    """Everything the daemon runs, built once per start."""

    state_dir: Path
    pin_factory: Factory | None
    doors: dict[str, Relay]
    previous_exit: dict[str, Any]
    cache: GrantCache
    outbox: Outbox
    recorder: EventRecorder
    learned: LearnedCache | None
    verifier: Verifier
    door_monitors: dict[str, DoorMonitor]
    emergency: EmergencyShell
    modes: ModeShell  # unarmed: only the daemon arms it, after READY (never at start or restart)
    adapters: list[UpstreamAdapter]
    central: CentralClient | None
    sync: BundleSync | None
    replicator: Replicator | None
    handback: WebhookHandback | None
    inputs: list[Input]
    reader_types: dict[str, str]
    reader_door: dict[str, str]
    reader_feedback: dict[str, SupervisedReader]
    pin_readers: set[str]

    async def close_connections(self) -> None:
        """The network clients, each closed even if another one fails."""
        for closer in [*(a.aclose for a in self.adapters), *(c.aclose for c in (self.central, self.handback) if c)]:
            with contextlib.suppress(Exception):
                await closer()
        if self.sync is not None:
            with contextlib.suppress(Exception):
                self.sync.close()

    def close_storage(self) -> None:
        """On the decision worker, after its last write: the SQLite stores."""
        self.outbox.close()
        self.cache.close()
        if self.learned is not None:
            self.learned.close()
        self.emergency.store.close()

    def close_hardware(self) -> None:
        """Last: door monitors and emergency lines, modes disarmed, then the relays (released)."""
        for monitor in self.door_monitors.values():
            monitor.close()
        self.emergency.close()
        self.modes.armed = False
        for door in self.doors.values():
            door.close()


@contextlib.contextmanager
def _config_error(key: str, *errors: type[Exception]) -> Iterator[None]:
    """The one place a loader's error becomes `ConfigError("key.path: problem")`."""
    try:
        yield
    except errors as e:
        raise ConfigError(f"{key}: {e}" if key else str(e)) from None


def _cache_replaced(what: str) -> None:
    log.warning("grants_db_replaced", what=what,
                check="something outside door-bridge replaced or deleted grants.db; decisions now read the new "
                      "file (an empty one until the next sync); look for a restore script or a manual copy")


def public_key(config: Config) -> Ed25519PublicKey:
    return bundle_public_key(config, needed="when upstream.central is configured")


def build_parts(config: Config, *, doors: dict[str, Relay], clock: Clock, clock_watch: ClockWatch,
                clock_trusted: Callable[[], bool], submit: Submit, pin_factory: Factory | None,
                extra_inputs: list[Input], adapters: list[UpstreamAdapter] | None,
                door_event_listeners: list[DoorEventListener]) -> Parts:
    """`doors` is filled first (relays released); the rest follows in dependency order."""
    cfg = config
    state_dir = Path(cfg.bridge.state_dir)
    state_files.restrict_umask()
    state_files.ensure_state_dir(state_dir)
    if pin_factory is None and (cfg.doors or any(r.type == "wiegand" for r in cfg.readers)):
        pin_factory = make_pin_factory(cfg.gpio.pin_factory, cfg.gpio.chip)
    for name, door_cfg in cfg.doors.items():
        doors[name] = Relay(name, door_cfg, pin_factory)
    previous_exit = lifecycle.previous_exit(state_dir)
    lifecycle.mark_running(state_dir)
    from bridge.state import integrity

    quarantined = integrity.check_state_dir(state_dir)
    for db in ("grants.db", "audit.db"):
        state_files.tighten(state_dir / db)
    fingerprint_key = state_files.fingerprint_key(state_dir)
    cache = GrantCache(state_dir / "grants.db", on_replaced=_cache_replaced)
    outbox = open_outbox(state_dir / "audit.db", cfg.audit.max_events, clock=clock, bridge_id=cfg.bridge.id)
    for q in quarantined:
        outbox.append("STATE_DB_QUARANTINED", {"bridgeId": cfg.bridge.id, **q})
    last = outbox.recent(1)
    clock_watch.load_floor(cache.meta.issued_at_ms, last[0].at if last else None)
    reader_door = {reader.id: reader.door for reader in cfg.readers}
    for extra in extra_inputs:
        reader_door.setdefault(extra.reader_id, next(iter(doors), ""))
    recorder = EventRecorder(outbox, submit, cfg.bridge.id, reader_door, door_event_listeners)
    learned = _learned(cfg, state_dir, outbox, clock)
    verifier = Verifier(cache, policy_from(cfg), offline_codes=_offline_codes(cfg),
                        learned=learned.recall if learned is not None else None,
                        modes=_mode_settings(cfg, reader_door), fingerprint_key=fingerprint_key)
    monitors = _door_monitors(cfg, doors, pin_factory, recorder)
    from bridge.door.mode_shell import ModeShell

    emergency = _emergency(cfg, state_dir, doors, monitors, reader_door, verifier, recorder, submit, clock,
                           clock_trusted, pin_factory, apply_modes=lambda: modes.apply())
    modes = ModeShell(verifier=verifier, doors=doors, reader_door=reader_door, record=recorder.record_door_event,
                      clock=clock, clock_trusted=clock_trusted, door_hold=emergency.door_hold)
    built_adapters = adapters if adapters is not None else _adapters(cfg, clock)
    central = sync = replicator = None
    if cfg.upstream.central is not None:
        central, sync, replicator = _central(cfg, state_dir, outbox, clock)
    handback = None
    if cfg.offline.webhook is not None:
        from bridge.central.handback import build_handback
        from bridge.config.secret_files import ApiKeyError

        with _config_error("offline.webhook", ApiKeyError):
            handback = build_handback(cfg.offline.webhook, cfg.upstream, outbox, state_dir, clock=clock)
    inputs, reader_types, feedback = _inputs(cfg, pin_factory, extra_inputs)
    pin_readers = {r.id for r in cfg.readers if getattr(r, "accept_pins", False)}
    pin_readers |= {extra.reader_id for extra in extra_inputs if getattr(extra, "accept_pins", False)}
    return Parts(state_dir=state_dir, pin_factory=pin_factory, doors=doors, previous_exit=previous_exit,
                 cache=cache, outbox=outbox, recorder=recorder, learned=learned, verifier=verifier,
                 door_monitors=monitors, emergency=emergency, modes=modes, adapters=built_adapters,
                 central=central, sync=sync, replicator=replicator, handback=handback, inputs=inputs,
                 reader_types=reader_types, reader_door=reader_door, reader_feedback=feedback, pin_readers=pin_readers)


def _mode_settings(cfg: Config, reader_door: dict[str, str]) -> ModeSettings:
    from verifier.door_mode import Mode, ModeSettings

    site = cfg.site
    return ModeSettings(site.zone(), Mode(site.default_mode), site.pin_timeout_s, reader_door)


def _offline_codes(cfg: Config) -> OfflineCodeCheck | None:
    secrets: dict[str, tuple[str, bytes]] = {}
    for name, door in cfg.doors.items():
        if door.passcode_secret_file is None:
            continue
        from bridge.config.secret_files import ApiKeyError
        from bridge.service.config_files import load_passcode_secret

        with _config_error(f"doors.{name}.passcode_secret_file", ApiKeyError):
            secret = load_passcode_secret(door.passcode_secret_file)
        secrets[name] = (door.passcode_door_id or name, secret)
    doors = {reader.id: secrets[reader.door] for reader in cfg.readers if reader.door in secrets}
    if not doors:
        return None
    from verifier.passcode import offline_code_check

    return offline_code_check(doors)


def _learned(cfg: Config, state_dir: Path, outbox: Outbox, clock: Clock) -> LearnedCache | None:
    """The learned offline cache (bridge/state/learned.py), for sites whose central ships no bundles."""
    section = cfg.upstream
    if section.frontelio is None and section.sna is None:
        return None
    from bridge.state.learned import LearnedCache, LearnedKeyError, load_secret

    with _config_error("offline.key_file", LearnedKeyError):
        secret = load_secret(state_dir, cfg.offline)
    sna = section.sna
    identities = {"sna": frozenset(v for v in (sna.device_sn, sna.device_id, sna.mac) if v)} if sna else {}
    bridge_id = cfg.bridge.id
    learned = LearnedCache(state_dir, cfg.offline, secret=secret, identities=identities,
                           on_refused=lambda r: outbox.append("LEARNED_ENTRY_REFUSED", {
                               "bridgeId": bridge_id, "upstream": r.upstream, "readerId": r.reader_id, "why": r.why}))
    swept = learned.sweep(clock())
    log.info("learned_cache", entries=swept.kept, expired_dropped=swept.expired, refused=swept.refused,
             learn=cfg.offline.learn, max_age_s=cfg.offline.max_age_s)
    return learned


def _door_monitors(cfg: Config, doors: dict[str, Relay], pin_factory: Factory | None,
                   recorder: EventRecorder) -> dict[str, DoorMonitor]:
    monitors: dict[str, DoorMonitor] = {}
    for name, door_cfg in cfg.doors.items():
        if door_cfg.pins().keys() == {"relay_pin"}:
            continue  # a bare relay: no door monitor to run
        from bridge.door.monitor import DoorMonitor

        monitors[name] = DoorMonitor(doors[name], door_cfg, pin_factory,
                                     on_event=lambda kind, body, door=name: recorder.door_event(door, kind, body))
    return monitors


def _emergency(cfg: Config, state_dir: Path, doors: dict[str, Relay], monitors: dict[str, DoorMonitor],
               reader_door: dict[str, str], verifier: Verifier, recorder: EventRecorder, submit: Submit,
               clock: Clock, clock_trusted: Callable[[], bool], pin_factory: Factory | None,
               apply_modes: Callable[[], None]) -> EmergencyShell:
    """Emergency inputs, precedence state, door rules and duress (bridge/service/emergency_shell.py)."""
    from bridge.service.emergency_shell import EmergencyShell
    from bridge.state.emergency_store import EmergencyStore, EmergencyStoreError

    with _config_error("", EmergencyStoreError):
        store = EmergencyStore(state_dir / "emergency.db")
    key = None
    if cfg.upstream.central is not None or cfg.cache.public_key or cfg.cache.public_key_file:
        with contextlib.suppress(ConfigError):
            key = public_key(cfg)
    return EmergencyShell(
        section=cfg.emergency, bridge_id=cfg.bridge.id, doors=doors, door_monitors=monitors,
        reader_door=reader_door, verifier=verifier, store=store, append=recorder.record_emergency, submit=submit,
        clock=clock, clock_trusted=clock_trusted, tz=cfg.site.zone(), public_key=key,
        pin_factory=pin_factory, apply_modes=apply_modes)


def _adapters(cfg: Config, clock: Clock) -> list[UpstreamAdapter]:
    section = cfg.upstream
    if not (section.frontelio or section.sna or section.digital_id):
        return []
    from bridge.config.secret_files import ApiKeyError
    from bridge.upstream.factory import build_adapters

    with _config_error("upstream", ApiKeyError):
        return build_adapters(section, now=clock)


def _central(cfg: Config, state_dir: Path, outbox: Outbox,
             clock: Clock) -> tuple[CentralClient, BundleSync, Replicator]:
    """Bundle sync and audit replication with the central (bridge protocol)."""
    from bridge.central.replicator import Replicator
    from bridge.central.sync import BundleSync
    from bridge.config.secret_files import ApiKeyError
    from bridge.upstream.central import build_central

    section = cfg.upstream.central
    assert section is not None
    settings = cfg.upstream.http
    with _config_error("upstream.central", ApiKeyError):
        central = build_central(section, settings, bridge_id=cfg.bridge.id)
    sync = BundleSync(central, section, settings, state_dir=state_dir, public_key=public_key(cfg), clock=clock,
                      audience=(cfg.bridge.id,))
    return central, sync, Replicator(central, outbox, section, settings, clock=clock)


def _inputs(cfg: Config, pin_factory: Factory | None,
            extra_inputs: list[Input]) -> tuple[list[Input], dict[str, str], dict[str, SupervisedReader]]:
    """The configured readers, then the ones handed in (the demo's console, tests)."""
    context = InputContext(pin_factory, cfg.site_wiegand_formats())
    inputs: list[Input] = []
    types: dict[str, str] = {}
    supervised: dict[str, SupervisedReader] = {}
    for reader in cfg.readers:
        types[reader.id] = reader.type
        inp = create_input(reader, context)
        inputs.append(inp)
        if hasattr(inp, "attach"):  # supervised readers (OSDP): events, health, LED/buzzer
            supervised[reader.id] = inp  # type: ignore[assignment]
    for extra in extra_inputs:
        inputs.append(extra)
        types.setdefault(extra.reader_id, type(extra).__name__)
    return inputs, types, supervised
