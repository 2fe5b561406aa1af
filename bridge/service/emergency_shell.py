"""The imperative shell of emergencies: input pins, signed commands, emergency.db, alarm output.

Everything it decides is decided in the verifier (`verifier.emergency`, `verifier.commands`,
`verifier.door_rules`); this module reads pins and the central, writes state and audit events,
and tells the door-mode shell to apply the precedence at once.

Threads: gpiozero calls the input handlers from its own threads; they only hand the new level to
the decision worker (`submit`), which owns the verifier, the outbox and emergency.db. So an input
edge, a command and a decision never interleave.

Safety:
- life-safety release is hard-wired (docs/door-io.md): the fire panel cuts the lock's power. The
  fire input only mirrors it — records it, holds the egress doors' relays released-to-open and
  keeps them from re-locking while it is active;
- input contacts are normally closed by default, so a cut wire is an alarm, not silence;
- nothing here energises a relay before READY: the relays follow the door-mode shell, which is
  armed only after start-up; the alarm output starts inactive;
- every state change is recorded (fsync'd) in emergency.db before it is acted on, and is one audit
  event and one journal line (warning for alarms, info otherwise).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from gpiozero import DigitalInputDevice, DigitalOutputDevice

from bridge.door.relay import Relay
from bridge.config.emergency import EmergencySection
from bridge.state.emergency_store import EmergencyStore, EmergencyStoreError
from verifier import commands
from verifier.antipassback import AntiPassback, ApbMode, Area
from verifier.commands import Checked, Command, CommandKind, Refusal
from verifier.door_mode import Mode
from verifier.door_rules import DoorRules
from verifier.duress import DuressRule
from verifier.emergency import Emergency, EmergencyEvent, EmergencySettings, Layer, SITE, Trigger
from verifier.interlock import DoorState, Interlock
from verifier.timeutil import to_ms
from verifier.two_person import TwoPerson

if TYPE_CHECKING:
    from bridge.door.monitor import DoorMonitor

log = structlog.get_logger()

STATE_KEY = "precedence"
CURSOR_KEY = "commands"
# A contact must read the same for this long before its new level counts (as the door monitor's
# DEFAULT_SETTLE_S: gpiozero's bounce_time is a lock-out that can drop the last edge of a burst).
SETTLE_S = 0.05

Append = Callable[[str, dict[str, Any]], None]
Submit = Callable[..., Future[Any]]


def build_emergency(section: EmergencySection) -> Emergency:
    return Emergency(EmergencySettings(
        egress_doors=frozenset(section.egress_doors), lockdown_override_roles=frozenset(section.lockdown_override_roles),
        tamper_action=section.tamper_action, power_fault_action=section.power_fault_action,
        admin_readers=frozenset(section.admin_readers), admin_roles=frozenset(section.admin_roles)))


def build_rules(section: EmergencySection, reader_door: dict[str, str], store: EmergencyStore) -> DoorRules | None:
    areas = [Area(name, frozenset(a.entry_readers), frozenset(a.exit_readers), ApbMode(a.mode), a.reentry_s)
             for name, a in section.antipassback.items()]
    if not (areas or section.two_person or section.interlock):
        return None
    return DoorRules(reader_door,
                     antipassback=AntiPassback(areas, store.presence()) if areas else None,
                     two_person=TwoPerson(dict(section.two_person)) if section.two_person else None,
                     interlock=Interlock([(p[0], p[1]) for p in section.interlock]) if section.interlock else None)


class _Line:
    """One emergency input pin: its alarm level (from the contact type), settled like a door monitor's contacts."""

    def __init__(self, kind: str, pin: int, contact: str, pin_factory: Any, on_level: Callable[[str, bool], None]) -> None:
        self.kind = kind
        self.name = f"GPIO{pin}"
        self._nc = contact == "nc"
        self._on_level = on_level
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.device = DigitalInputDevice(pin, pull_up=True, pin_factory=pin_factory)
        self.device.when_activated = self._edge
        self.device.when_deactivated = self._edge

    @property
    def alarm(self) -> bool:
        # pull-up: `is_active` = the line is LOW = the contact is closed.
        closed = bool(self.device.is_active)
        return not closed if self._nc else closed

    def _edge(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(SETTLE_S, self._settled)
            self._timer.daemon = True
            self._timer.start()

    def _settled(self) -> None:
        if not self._closed:
            self._on_level(self.kind, self.alarm)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        self.device.close()


class EmergencyShell:
    def __init__(self, *, section: EmergencySection, bridge_id: str, doors: dict[str, Relay], door_monitors: dict[str, DoorMonitor],
                 reader_door: dict[str, str], verifier: Any, store: EmergencyStore, append: Append, submit: Submit,
                 clock: Callable[[], datetime], clock_trusted: Callable[[], bool], tz: ZoneInfo,
                 public_key: Any, pin_factory: Any, apply_modes: Callable[[], None]) -> None:
        self.section = section
        self.bridge_id = bridge_id
        self.doors = doors
        self.door_monitors = door_monitors
        self.reader_door = reader_door
        self.verifier = verifier
        self.store = store
        self.append = append
        self.submit = submit
        self.clock = clock
        self.clock_trusted = clock_trusted
        self.tz = tz
        self.public_key = public_key
        self.apply_modes = apply_modes
        self.emergency = build_emergency(section)
        saved = store.load(STATE_KEY)
        if saved is not None:
            self.emergency.restore(saved)
        self.rules = build_rules(section, reader_door, store)
        verifier.emergency = self.emergency
        verifier.rules = self.rules
        verifier.duress = DuressRule(section.duress_offset) if section.duress_offset else None
        cursor = store.load(CURSOR_KEY)
        self.command_cursor = int(cursor["since"]) if cursor else 0
        self.commands_error: str | None = None
        self.commands_last_ok: datetime | None = None
        self._saved = self.emergency.snapshot()
        self._last_tick = clock()
        self.lines: dict[str, _Line] = {}
        self.alarm_out: DigitalOutputDevice | None = None
        try:
            for kind, pin, contact in (("fire", section.fire_pin, section.fire_contact),
                                       ("lockdown", section.lockdown_pin, section.lockdown_contact),
                                       ("tamper", section.tamper_pin, section.tamper_contact),
                                       ("power_fault", section.power_fault_pin, section.power_fault_contact)):
                if pin is not None:
                    self.lines[kind] = _Line(kind, pin, contact, pin_factory, self._level)
            if section.alarm_output_pin is not None:
                self.alarm_out = DigitalOutputDevice(section.alarm_output_pin, active_high=section.alarm_output_active_high,
                                                     initial_value=False, pin_factory=pin_factory)
        except Exception:
            self.close()
            raise
        if saved is not None and self.emergency.lockdowns:
            log.warning("lockdown_restored", scope=",".join("site" if k == SITE else k for k in sorted(self.emergency.lockdowns)),
                        check="the bridge restarted in lockdown and stays in it until it is released "
                              "(the lockdown input, a signed lockdown_off command or the admin credential)")

    # --- inputs (worker thread) ---------------------------------------------------------------

    def read_inputs(self) -> None:
        """At start (after READY): the lines' levels now, as if each had just changed."""
        for kind, line in self.lines.items():
            self._input(kind, line.alarm, at_start=True)
        self.flush()

    def _level(self, kind: str, alarm: bool) -> None:
        """From a gpiozero/timer thread: hand the level to the worker."""
        self.submit(self._input_and_flush, kind, alarm)

    def _input_and_flush(self, kind: str, alarm: bool) -> None:
        self._input(kind, alarm)
        self.flush()

    def _input(self, kind: str, alarm: bool, at_start: bool = False) -> None:
        now_ms = to_ms(self.clock())
        by = self.lines[kind].name
        e = self.emergency
        if kind == "fire":
            e.set_fire(alarm, by, now_ms)
        elif kind == "lockdown":
            started = e.lockdowns.get(SITE)
            if alarm:
                e.set_lockdown(True, None, Trigger("input", by, now_ms))
            elif started is not None and started.source == "input":
                # The input ends only the lockdown it started; one from a command or the admin
                # credential is ended the same way it was started.
                e.set_lockdown(False, None, Trigger("input", by, now_ms))
        elif kind in ("tamper", "power_fault"):
            e.set_alarm(kind, alarm, by, now_ms)  # type: ignore[arg-type]

    # --- commands ------------------------------------------------------------------------------

    async def poll_forever(self, central: Any) -> None:
        """Ask the central for signed commands every `command_poll_s`; each is checked and applied
        on the worker. A failure is logged once per cause; the next round tries again."""
        from bridge.upstream.errors import UpstreamError

        while True:
            try:
                entries = await central.get_commands(self.command_cursor)
                self.commands_last_ok = self.clock()
                if self.commands_error is not None:
                    log.info("commands_reachable")
                    self.commands_error = None
                if entries:
                    await asyncio.wrap_future(self.submit(self.take_commands, [(e.seq, e.token) for e in entries]))
            except UpstreamError as e:
                if str(e) != self.commands_error:
                    log.warning("commands_unreachable", error=str(e)[:200],
                                check="the central's commands endpoint (docs/bridge-protocol.md); doors keep their "
                                      "state and the local inputs still work")
                self.commands_error = str(e)
            await asyncio.sleep(self.section.command_poll_s)

    def take_commands(self, entries: list[tuple[int, str]]) -> None:
        """On the worker: check and apply each listed command, in order; advance the cursor."""
        for seq, token in entries:
            if seq <= self.command_cursor:
                continue
            now_ms = to_ms(self.clock())
            checked = commands.check(token, self.public_key, bridge_id=self.bridge_id, doors=frozenset(self.doors),
                                     now_ms=now_ms, nonce_seen=self.store.nonce_seen, clock_trusted=self.clock_trusted())
            try:
                if checked.command is not None:
                    # The nonce is on disk before the command acts: a replay after a crash is refused.
                    self.store.take_nonce(checked.command.nonce, checked.command.expires_at_ms, now_ms)
                self.store.save(CURSOR_KEY, {"since": seq})
            except EmergencyStoreError as e:
                log.error("command_not_taken", error=str(e)[:300], seq=seq,
                          check="disk space and the SD card (df -h, dmesg); the command is fetched again next poll")
                break
            if checked.command is None:
                self._refused(checked, seq)
            else:
                self._apply(checked.command, seq, now_ms)
            self.command_cursor = seq
        self.flush()

    def _refused(self, checked: Checked, seq: int, command: Command | None = None) -> None:
        assert checked.refusal is not None
        body = {"bridgeId": self.bridge_id, "seq": seq, "refusal": checked.refusal.value, "detail": checked.detail,
                **({"claims": checked.claims} if checked.claims else {}), **(command.as_wire() if command else {})}
        self.append("COMMAND_REFUSED", body)
        claims = checked.claims or ({"command": command.kind.value, "id": command.id} if command else {})
        log.warning("command_refused", refusal=checked.refusal.value, command=claims.get("command", "-"),
                    command_id=claims.get("id", "-"), detail=checked.detail,
                    check="who sent it? a refused command changes nothing at the door; see docs/troubleshooting.md")

    def _apply(self, c: Command, seq: int, now_ms: int) -> None:
        e = self.emergency
        trigger = Trigger("command", c.id, now_ms)
        if c.kind is CommandKind.UNLOCK_ONCE:
            assert c.door is not None
            if e.locked_down(c.door) and e.layer(c.door, now_ms) is Layer.LOCKDOWN:
                self._refused(Checked(None, Refusal.LOCKDOWN_IN_FORCE, "unlock_once during a lockdown", None), seq, c)
                return
            interlock = self.rules.interlock if self.rules is not None else None
            if interlock is not None and (other := interlock.blocking(c.door, self.door_states())) is not None:
                self._refused(Checked(None, Refusal.INTERLOCKED, f"unlock_once while {other} is open or unlocked", None), seq, c)
                return
        self.append("COMMAND_APPLIED", {"bridgeId": self.bridge_id, "seq": seq, **c.as_wire()})
        log.info("command_applied", command=c.kind.value, command_id=c.id, door=c.door or "-")
        match c.kind:
            case CommandKind.UNLOCK_ONCE:
                assert c.door is not None
                door = self.doors[c.door]
                if not door.held:  # the row above is on disk before the relay moves
                    monitor = self.door_monitors.get(c.door)
                    if monitor is not None:
                        monitor.authorised("command")
                    door.pulse()
            case CommandKind.HOLD_UNLOCKED:
                assert c.door is not None
                e.set_override(c.door, Mode.UNLOCKED, c.until_ms, trigger)
            case CommandKind.LOCK:
                assert c.door is not None
                e.set_override(c.door, Mode.LOCKED, c.until_ms, trigger)
            case CommandKind.RESUME:
                assert c.door is not None
                e.set_override(c.door, None, None, trigger)
            case CommandKind.LOCKDOWN_ON | CommandKind.LOCKDOWN_OFF:
                e.set_lockdown(c.kind is CommandKind.LOCKDOWN_ON, c.door, trigger)
            case CommandKind.ANTIPASSBACK_FORGIVE:
                apb = self.rules.antipassback if self.rules is not None else None
                if apb is not None:
                    apb.forgive(c.area, None, f"command {c.id}", now_ms)

    # --- the periodic side (worker thread, once a second) --------------------------------------

    def tick(self) -> None:
        now = self.clock()
        now_ms = to_ms(now)
        self.emergency.expire(now_ms)
        apb = self.rules.antipassback if self.rules is not None else None
        if apb is not None:
            for name, area in self.section.antipassback.items():
                if area.forgive_at is not None and _passed(area.forgive_at, self._last_tick, now, self.tz):
                    apb.forgive(name, None, f"forgive_at {area.forgive_at}", now_ms)
        self._last_tick = now
        self.flush()

    # --- recording -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Persist, then record every event the cores produced, then let the relays follow."""
        events = self.emergency.take_events() + (self.rules.take_events() if self.rules is not None else [])
        snapshot = self.emergency.snapshot()
        try:
            if snapshot != self._saved:
                self.store.save(STATE_KEY, snapshot)
                self._saved = snapshot
            if self.rules is not None and self.rules.antipassback is not None:
                self.store.apply_presence(self.rules.antipassback.take_changes())
        except EmergencyStoreError as e:
            # The doors go on with the state in memory (a full disk must not stop decisions or a
            # fire release); what a restart would forget is said, loudly, and retried next time.
            log.error("emergency_state_not_saved", error=str(e)[:300],
                      check="disk space and the SD card (df -h, dmesg): a restart now would forget this lockdown, "
                            "override or anti-passback presence")
        for event in events:
            self._record(event)
        if self.alarm_out is not None and bool(self.alarm_out.value) != self.emergency.alarm_output:
            self.alarm_out.value = self.emergency.alarm_output
            log.warning("alarm_output_on" if self.emergency.alarm_output else "alarm_output_off",
                        pin=self.section.alarm_output_pin)
        if events:
            self.apply_modes()

    def _record(self, event: EmergencyEvent) -> None:
        self.append(event.type, {"bridgeId": self.bridge_id, **event.body})
        fields: dict[str, Any] = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in event.body.items()
                                  if isinstance(v, (str, int, float, bool, list))}
        check = _CHECKS.get(event.type)
        if check:
            fields["check"] = check
        (log.warning if event.severity == "warning" else log.info)(event.journal, **fields)

    # --- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now_ms = to_ms(self.clock())
        out: dict[str, Any] = self.emergency.status(now_ms)
        out["inputs"] = {kind: {"pin": line.name, "alarm": line.alarm} for kind, line in self.lines.items()}
        out["alarm_output"] = self.emergency.alarm_output if self.alarm_out is not None else None
        if self.rules is not None:
            if self.rules.antipassback is not None:
                out["antipassback"] = self.rules.antipassback.status()
            if self.rules.two_person is not None:
                out["two_person"] = self.rules.two_person.status(now_ms)
            if self.rules.interlock is not None:
                out["interlock"] = [list(p) for p in self.section.interlock]
        out["commands"] = {"cursor": self.command_cursor, "last_error": self.commands_error,
                           "last_ok": self.commands_last_ok.isoformat(timespec="seconds") if self.commands_last_ok else None}
        return out

    def door_states(self) -> dict[str, DoorState]:
        """Each door's position and relay now: the interlock's view (worker thread)."""
        return {name: DoorState(open=name in self.door_monitors and self.door_monitors[name].state()["position"] == "open",
                                unlocked=door.energised or door.held) for name, door in self.doors.items()}

    def door_hold(self, door: str, now_ms: int) -> bool | None:
        """For doors with no reader (a pure egress door): True held, False not, None: the door's readers say."""
        layer = self.emergency.layer(door, now_ms)
        if layer is Layer.EVACUATION:
            return True
        if layer is Layer.LOCKDOWN:
            return False
        if layer is Layer.OVERRIDE:
            return self.emergency.overrides[door].mode is Mode.UNLOCKED
        return None

    def close(self) -> None:
        for line in self.lines.values():
            line.close()
        if self.alarm_out is not None:
            self.alarm_out.off()
            self.alarm_out.close()


_CHECKS = {
    "FIRE_ALARM": "the fire panel's alarm; egress doors are released by its hard wiring and held here until it clears",
    "FIRE_ALARM_CLEARED": "the egress doors return to their lockdown, override or schedule mode",
    "LOCKDOWN": "only lockdown-override holders pass; release: the lockdown input, a signed lockdown_off, or the admin credential",
    "TAMPER": "the reader or cabinet was opened: go and look; door-bridge events tail",
    "POWER_FAULT": "mains or the lock PSU failed (battery?); the fire release is hard-wired and does not depend on this bridge",
    "ANTIPASSBACK_VIOLATION": "a pass against the holder's presence (tailgating?); forgive with a signed antipassback_forgive",
}


def _passed(hhmm: str, before: datetime, now: datetime, tz: ZoneInfo) -> bool:
    """Did local wall time HH:MM happen in (before, now]? (Checked for today and yesterday.)"""
    hour, minute = (int(x) for x in hhmm.split(":"))
    local = now.astimezone(tz)
    for day in (local.date(), local.date() - timedelta(days=1)):
        at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
        if before < at <= now:
            return True
    return False
