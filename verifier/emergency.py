"""Emergency precedence: evacuation > lockdown > manual override > schedule > normal.

Pure state, clock injected. `Emergency` holds what the site's emergency inputs and commands have
said (fire input, lockdowns, manual overrides, tamper and power-fault lines) and `apply(door,
base, now_ms)` is THE one place that turns the door mode the schedule gives
(`DoorModes.effective`, layer `schedule` or `normal`) into the mode the door has now:

| layer | when | the door |
| --- | --- | --- |
| evacuation | the fire input is active and the door is an egress door | `unlocked` (relay held), whatever else holds |
| lockdown | site-wide or this door | `locked`; only holders with a lockdown-override role pass (`LOCKDOWN`) |
| override | a signed `hold_unlocked` / `lock` command, until its `until` | `unlocked` / `locked` |
| schedule | the door's `door_mode` record has a schedule | the slot's mode |
| normal | otherwise | the record's fixed mode, or the site default |

Every change of this state is an `EmergencyEvent` (audit type, journal event, level, body) the
daemon takes with `take_events()` and records, so the pure core decides what happened and the
shell only writes it down. `snapshot()`/`restore()` carry lockdowns and overrides across a
restart (the fire, tamper and power-fault lines are read again from their pins at start).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from verifier.door_mode import EffectiveMode, Mode

SITE = "*"  # the scope of a site-wide lockdown


class Layer(StrEnum):
    EVACUATION = "evacuation"
    LOCKDOWN = "lockdown"
    OVERRIDE = "override"
    SCHEDULE = "schedule"
    NORMAL = "normal"


PRECEDENCE = (Layer.EVACUATION, Layer.LOCKDOWN, Layer.OVERRIDE, Layer.SCHEDULE, Layer.NORMAL)

AlarmAction = Literal["none", "alarm_output", "lockdown"]
Severity = Literal["warning", "info"]


@dataclass(frozen=True, slots=True)
class EmergencySettings:
    egress_doors: frozenset[str] = frozenset()
    lockdown_override_roles: frozenset[str] = frozenset()
    tamper_action: AlarmAction = "none"
    power_fault_action: AlarmAction = "none"
    # The designated admin credential: a GRANT at one of these readers for a holder with one of
    # these roles toggles the site lockdown (on if off, off if on).
    admin_readers: frozenset[str] = frozenset()
    admin_roles: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Trigger:
    """Who or what started a lockdown or an override: `source` is `input`, `command`, `credential`
    or `tamper`/`power_fault`; `by` names the pin, command id or holder (never a secret)."""

    source: str
    by: str
    at_ms: int

    def as_wire(self) -> dict[str, Any]:
        return {"source": self.source, "by": self.by, "atMs": self.at_ms}


@dataclass(frozen=True, slots=True)
class Override:
    mode: Mode  # UNLOCKED or LOCKED
    until_ms: int | None
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class EmergencyEvent:
    """One state change: the audit event type, the journal event name, its level and body."""

    type: str
    journal: str
    severity: Severity
    body: dict[str, Any]


@dataclass
class Emergency:
    settings: EmergencySettings = field(default_factory=EmergencySettings)

    def __post_init__(self) -> None:
        self.fire_active = False
        self.fire_since_ms: int | None = None
        self.lockdowns: dict[str, Trigger] = {}  # SITE or a door name → what started it
        self.overrides: dict[str, Override] = {}
        self.alarms: dict[str, int] = {}  # "tamper" / "power_fault" → since (ms)
        self.alarm_output = False  # the site's alarm output should sound
        self._events: list[EmergencyEvent] = []

    # --- precedence (the one place) -----------------------------------------------------------

    def layer(self, door: str, now_ms: int) -> Layer | None:
        """The emergency layer in force at `door`, or None (the schedule or normal mode)."""
        if self.fire_active and door in self.settings.egress_doors:
            return Layer.EVACUATION
        if SITE in self.lockdowns or door in self.lockdowns:
            return Layer.LOCKDOWN
        o = self.overrides.get(door)
        if o is not None and (o.until_ms is None or now_ms < o.until_ms):
            return Layer.OVERRIDE
        return None

    def apply(self, door: str, base: EffectiveMode, now_ms: int) -> EffectiveMode:
        match self.layer(door, now_ms):
            case Layer.EVACUATION:
                return replace(base, mode=Mode.UNLOCKED, layer=Layer.EVACUATION.value,
                               why="evacuation: fire alarm input active, egress door released",
                               next_change_ms=None, next_mode=None, first_person_in_pending=False)
            case Layer.LOCKDOWN:
                t = self.lockdowns.get(door) or self.lockdowns[SITE]
                scope = "door" if door in self.lockdowns else "site"
                return replace(base, mode=Mode.LOCKED, layer=Layer.LOCKDOWN.value,
                               why=f"lockdown ({scope}, by {t.source} {t.by})", next_change_ms=None, next_mode=None,
                               first_person_in_pending=False, admit_roles=self.settings.lockdown_override_roles)
            case Layer.OVERRIDE:
                o = self.overrides[door]
                return replace(base, mode=o.mode, layer=Layer.OVERRIDE.value,
                               why=f"manual override {o.mode.value} (by {o.trigger.source} {o.trigger.by})",
                               next_change_ms=o.until_ms, next_mode=None if o.until_ms is None else base.mode,
                               first_person_in_pending=False)
        return base

    def locked_down(self, door: str) -> bool:
        return SITE in self.lockdowns or door in self.lockdowns

    # --- inputs -------------------------------------------------------------------------------

    def set_fire(self, active: bool, by: str, now_ms: int) -> None:
        if active == self.fire_active:
            return
        self.fire_active = active
        body: dict[str, Any] = {"input": by, "egressDoors": sorted(self.settings.egress_doors)}
        if active:
            self.fire_since_ms = now_ms
            self._emit("FIRE_ALARM", "fire_alarm", "warning", body)
        else:
            body["activeForS"] = round((now_ms - (self.fire_since_ms or now_ms)) / 1000, 1)
            self.fire_since_ms = None
            self._emit("FIRE_ALARM_CLEARED", "fire_alarm_cleared", "warning", body)

    def set_lockdown(self, on: bool, door: str | None, trigger: Trigger) -> bool:
        """Start or end a lockdown of `door` (None: the whole site). False if nothing changed."""
        scope = door or SITE
        if on == (scope in self.lockdowns):
            return False
        body: dict[str, Any] = {"scope": "site" if door is None else "door", "door": door, **trigger.as_wire()}
        if on:
            self.lockdowns[scope] = trigger
            self._emit("LOCKDOWN", "lockdown", "warning", body)
        else:
            started = self.lockdowns.pop(scope)
            body["startedBy"] = started.as_wire()
            self._emit("LOCKDOWN_ENDED", "lockdown_ended", "warning", body)
        return True

    def toggle_lockdown(self, trigger: Trigger) -> bool:
        """The designated admin credential: site lockdown on if off, off if on. Returns the new state."""
        on = SITE not in self.lockdowns
        self.set_lockdown(on, None, trigger)
        return on

    def admin_presented(self, reader_id: str, user_id: str | None, roles: frozenset[str], now_ms: int) -> bool:
        """A valid credential at an admin reader: toggles the site lockdown if its holder is an admin."""
        if reader_id not in self.settings.admin_readers or user_id is None or not (roles & self.settings.admin_roles):
            return False
        self.toggle_lockdown(Trigger("credential", f"{user_id}@{reader_id}", now_ms))
        return True

    def set_override(self, door: str, mode: Mode | None, until_ms: int | None, trigger: Trigger) -> None:
        """`mode` None ends the override: the door goes back to its schedule."""
        before = self.overrides.pop(door, None)
        body: dict[str, Any] = {"door": door, **trigger.as_wire()}
        if mode is None:
            if before is not None:
                self._emit("DOOR_OVERRIDE_ENDED", "door_override_ended", "info", {**body, "was": before.mode.value})
            return
        self.overrides[door] = Override(mode, until_ms, trigger)
        self._emit("DOOR_OVERRIDE", "door_override", "info", {**body, "mode": mode.value, "untilMs": until_ms})

    def expire(self, now_ms: int) -> None:
        """Overrides whose `until` has passed end (one event each)."""
        for door, o in list(self.overrides.items()):
            if o.until_ms is not None and now_ms >= o.until_ms:
                del self.overrides[door]
                self._emit("DOOR_OVERRIDE_ENDED", "door_override_ended", "info",
                           {"door": door, "was": o.mode.value, "source": "expiry", "by": "until", "atMs": now_ms})

    def set_alarm(self, kind: Literal["tamper", "power_fault"], active: bool, by: str, now_ms: int) -> None:
        """A tamper or power-fault line: an event at each edge, and the configured action."""
        if active == (kind in self.alarms):
            return
        action = self.settings.tamper_action if kind == "tamper" else self.settings.power_fault_action
        name = "TAMPER" if kind == "tamper" else "POWER_FAULT"
        body: dict[str, Any] = {"input": by, "action": action}
        if active:
            self.alarms[kind] = now_ms
            self._emit(name, kind, "warning", body)
            if action == "lockdown":
                self.set_lockdown(True, None, Trigger(kind, by, now_ms))
        else:
            since = self.alarms.pop(kind)
            self._emit(f"{name}_CLEARED", f"{kind}_cleared", "warning",
                       {**body, "activeForS": round((now_ms - since) / 1000, 1)})
            # A lockdown the alarm started stays until a person ends it: a cabinet closing again
            # does not prove nobody is inside.
        self.alarm_output = any(
            (self.settings.tamper_action if k == "tamper" else self.settings.power_fault_action) == "alarm_output"
            for k in self.alarms)

    # --- the shell's side ---------------------------------------------------------------------

    def take_events(self) -> list[EmergencyEvent]:
        taken, self._events = self._events, []
        return taken

    def _emit(self, type_: str, journal: str, severity: Severity, body: dict[str, Any]) -> None:
        self._events.append(EmergencyEvent(type_, journal, severity, body))

    def status(self, now_ms: int) -> dict[str, Any]:
        # Read by the status socket's thread while the worker may change the state: copies first
        # (a dict copy is one step under the GIL).
        lockdowns, overrides, alarms = dict(self.lockdowns), dict(self.overrides), dict(self.alarms)
        return {
            "fire_active": self.fire_active,
            "lockdown": {("site" if k == SITE else k): {"source": t.source, "by": t.by} for k, t in sorted(lockdowns.items())},
            "overrides": {d: {"mode": o.mode.value, "until_ms": o.until_ms, "source": o.trigger.source}
                          for d, o in sorted(overrides.items())
                          if o.until_ms is None or now_ms < o.until_ms},
            "alarms": sorted(alarms),
        }

    def status_words(self) -> str:
        """For STATUS=: empty when nothing is in force."""
        parts = []
        lockdowns, alarms = dict(self.lockdowns), dict(self.alarms)
        if self.fire_active:
            parts.append("EVACUATION (fire input active)")
        if SITE in lockdowns:
            parts.append("LOCKDOWN (site)")
        doors = sorted(k for k in lockdowns if k != SITE)
        if doors:
            parts.append(f"LOCKDOWN ({', '.join(doors)})")
        if alarms:
            parts.append(f"ALARM {', '.join(sorted(a.upper() for a in alarms))}")
        return "; ".join(parts)

    def snapshot(self) -> dict[str, Any]:
        """What must survive a restart: lockdowns and overrides (inputs are read again)."""
        return {"lockdowns": {k: t.as_wire() for k, t in self.lockdowns.items()},
                "overrides": {d: {"mode": o.mode.value, "untilMs": o.until_ms, "trigger": o.trigger.as_wire()}
                              for d, o in self.overrides.items()}}

    def restore(self, saved: dict[str, Any]) -> None:
        self.lockdowns = {k: _trigger(t) for k, t in saved.get("lockdowns", {}).items()}
        self.overrides = {d: Override(Mode(o["mode"]), o.get("untilMs"), _trigger(o["trigger"]))
                          for d, o in saved.get("overrides", {}).items()}


def _trigger(d: dict[str, Any]) -> Trigger:
    return Trigger(str(d["source"]), str(d["by"]), int(d["atMs"]))
