"""Door modes: which credentials a door accepts now, and what it does on its own (hold the relay).

Pure state, clock injected: `DoorModes` is built from the cache's door-mode, schedule and holiday
records (precomputed once per cache version) and advanced only by the instants it is given.

- `effective(reader, now_ms, clock_trusted)` is THE one place the effective mode is computed
  (fixed mode or schedule → first-person-in → trusted clock), then the emergency precedence
  (`precedence`, verifier/emergency.py: evacuation > lockdown > manual override) on top.
- `gate(...)` turns a decision the grants gave (GRANT/DENY, who) into the decision the mode gives:
  a card at a card-and-PIN door is `PIN_REQUIRED` and opens a pairing window for that holder at
  that door; the holder's own PIN inside it is the GRANT.
- `changes(now_ms, clock_trusted)` reports every change of effective mode since the last call, so
  the daemon can hold or release the relay and write the audit event and journal line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable
from zoneinfo import ZoneInfo

from verifier.schedule import EMPTY_CALENDAR, Calendar, Schedule, ScheduleIndex, Segment
from verifier.types import AccessDecision, Decision, Reason


class Mode(StrEnum):
    CARD_ONLY = "card-only"
    CARD_AND_PIN = "card-and-pin"
    CARD_OR_PIN = "card-or-pin"
    PIN_ONLY = "pin-only"
    FACILITY_CODE = "facility-code"
    UNLOCKED = "unlocked"
    LOCKED = "locked"


MODES = frozenset(m.value for m in Mode)
# Credential kinds presented rather than typed (a card, a phone credential, a visitor pass): they
# are what a "card" means to a mode. Typed codes (`pin`) are the PIN side.
CARD_KINDS = frozenset({"card", "jwt", "invite", "digital_id"})
DEFAULT_PIN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FirstPersonIn:
    """An unlocked slot waits for the first GRANT of a holder with one of `roles` (empty: anyone)."""

    roles: frozenset[str] = frozenset()

    def admits(self, holder_roles: frozenset[str]) -> bool:
        return not self.roles or bool(self.roles & holder_roles)


@dataclass(frozen=True, slots=True)
class DoorPolicy:
    """One `door_mode` record. `readers` None: the record's id names a configured door."""

    id: str
    readers: tuple[str, ...] | None
    mode: Mode | None = None
    schedule_id: str | None = None
    pin_timeout_s: float | None = None
    facility_codes: frozenset[int] = frozenset()
    first_person_in: FirstPersonIn | None = None


@dataclass(frozen=True, slots=True)
class EffectiveMode:
    mode: Mode
    door: str  # the policy id (the pairing scope), or the configured door of an unconfigured reader
    why: str
    next_change_ms: int | None = None
    next_mode: Mode | None = None
    first_person_in_pending: bool = False
    # Which layer of the precedence (verifier/emergency.py) gave this mode: evacuation, lockdown,
    # override, schedule or normal.
    layer: str = "normal"
    # Lockdown: the roles that still pass (instead of the `override` roles of a locked mode).
    admit_roles: frozenset[str] | None = None

    def as_status(self) -> dict[str, object]:
        from verifier.timeutil import from_ms, iso

        return {"mode": self.mode.value, "why": self.why, "layer": self.layer, "door_policy": self.door,
                "first_person_in_pending": self.first_person_in_pending,
                "next_change": iso(from_ms(self.next_change_ms)) if self.next_change_ms is not None else None,
                "next_mode": self.next_mode.value if self.next_mode else None}


@dataclass(frozen=True, slots=True)
class ModeChange:
    """An effective-mode change at one reader (the daemon groups them by door for the relay)."""

    reader_id: str
    before: Mode | None
    after: EffectiveMode
    at_ms: int


@dataclass(slots=True)
class _Pairing:
    user_id: str
    until_ms: int
    zone_id: str | None
    zone_name: str | None
    user_name: str | None


@dataclass(slots=True)
class _Started:
    """First person in: the unlocked segment (by its start) that a holder has started."""

    segment_from_ms: int
    by_user: str | None


@dataclass(frozen=True, slots=True)
class ModeSettings:
    """What the site's config says: its zone, the mode of a door no record names, the PIN window,
    and which configured door each reader belongs to."""

    tz: ZoneInfo = ZoneInfo("UTC")
    default_mode: Mode = Mode.CARD_OR_PIN
    pin_timeout_s: float = DEFAULT_PIN_TIMEOUT_S
    reader_door: dict[str, str] = field(default_factory=dict)


# The emergency precedence (verifier/emergency.py `Emergency.apply`): configured door, the mode
# the schedule gives, now → the mode the door has.
Precedence = Callable[[str, "EffectiveMode", int], "EffectiveMode"]

# Holder roles for a user id (the cache's look-up); only asked at locked and first-person-in doors.
RolesOf = Callable[[str], frozenset[str]]


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: AccessDecision
    guess: bool  # the mode turned a secret down (a PIN of someone else): counts as a guess


@dataclass
class DoorModes:
    policies: list[DoorPolicy]
    schedules: dict[str, Schedule]
    tz: ZoneInfo
    calendar: Calendar = EMPTY_CALENDAR
    default_mode: Mode = Mode.CARD_OR_PIN
    pin_timeout_s: float = DEFAULT_PIN_TIMEOUT_S
    reader_door: dict[str, str] = field(default_factory=dict)  # config: reader → door name
    override_roles: frozenset[str] = frozenset()
    roles_of: RolesOf = field(default=lambda _user: frozenset())
    precedence: Precedence | None = None

    def __post_init__(self) -> None:
        self._indexes = {sid: ScheduleIndex(s, self.tz, self.calendar) for sid, s in self.schedules.items()}
        by_door: dict[str, DoorPolicy] = {}
        by_reader: dict[str, DoorPolicy] = {}
        for p in sorted(self.policies, key=lambda p: (-(len(p.readers) if p.readers else 10**6), p.id)):
            if p.readers is None:
                by_door[p.id] = p
            else:
                for r in p.readers:  # the record listing fewest readers is the most specific
                    by_reader[r] = p
        self._by_door = by_door
        self._by_reader = by_reader
        self._pairings: dict[str, _Pairing] = {}
        self._started: dict[str, _Started] = {}
        self._last: dict[str, Mode] = {}
        # How many first-person-in slots a GRANT has started: the only way a decision changes a
        # door's effective mode, so the shell re-applies modes after a batch only when it moved.
        self.slots_started = 0

    # --- the effective mode (one place) ---------------------------------------------------------

    def policy_for(self, reader_id: str) -> DoorPolicy | None:
        p = self._by_reader.get(reader_id)
        if p is None and (door := self.reader_door.get(reader_id)) is not None:
            p = self._by_door.get(door)
        return p

    def effective(self, reader_id: str, now_ms: int, clock_trusted: bool = True) -> EffectiveMode:
        """Evacuation > lockdown > manual override (the precedence, if wired) > schedule > normal."""
        base = self._scheduled(reader_id, now_ms, clock_trusted)
        if self.precedence is None:
            return base
        return self.precedence(self.reader_door.get(reader_id, reader_id), base, now_ms)

    def _scheduled(self, reader_id: str, now_ms: int, clock_trusted: bool) -> EffectiveMode:
        policy = self.policy_for(reader_id)
        if policy is None:
            return EffectiveMode(self.default_mode, self.reader_door.get(reader_id, reader_id), "site default (no door_mode record)")
        if policy.schedule_id is None:
            return EffectiveMode(policy.mode or self.default_mode, policy.id, "fixed mode")
        index = self._indexes.get(policy.schedule_id)
        if index is None:
            return EffectiveMode(self.default_mode, policy.id, f"schedule {policy.schedule_id} missing: site default")
        seg = index.current(now_ms)
        mode = _mode(seg.value, self.default_mode)
        nxt = index.next_change(now_ms)
        after = EffectiveMode(mode, policy.id, seg.why, nxt.from_ms if nxt else None,
                              _mode(nxt.value, self.default_mode) if nxt else None, layer="schedule")
        if mode is not Mode.UNLOCKED:
            return after
        fallback = self._fallback(index.schedule)
        if not clock_trusted:
            # An untrusted clock never unlocks a door on a schedule (the clock may be in the slot by mistake).
            return replace(after, mode=fallback, why=f"{seg.why}; clock not trusted: not unlocking")
        if policy.first_person_in is not None:
            started = self._started.get(policy.id)
            if started is None or started.segment_from_ms != seg.from_ms:
                return replace(after, mode=fallback, why=f"{seg.why}; first-person-in pending",
                               next_change_ms=seg.until_ms, next_mode=fallback, first_person_in_pending=True)
            return replace(after, why=f"{seg.why}; first person in: {started.by_user or '-'}",
                           next_change_ms=seg.until_ms)
        return after

    def _fallback(self, schedule: Schedule) -> Mode:
        default = _mode(schedule.default, self.default_mode)
        return default if default is not Mode.UNLOCKED else Mode.CARD_ONLY

    def _segment(self, policy: DoorPolicy, now_ms: int) -> Segment | None:
        index = self._indexes.get(policy.schedule_id) if policy.schedule_id else None
        return index.current(now_ms) if index else None

    def changes(self, readers: list[str], now_ms: int, clock_trusted: bool = True) -> list[ModeChange]:
        out = []
        for reader in readers:
            eff = self.effective(reader, now_ms, clock_trusted)
            before = self._last.get(reader)
            if before is not eff.mode:
                self._last[reader] = eff.mode
                out.append(ModeChange(reader, before, eff, now_ms))
        return out

    # --- the gate -------------------------------------------------------------------------------

    def gate(self, decision: AccessDecision, kind: str, card_number: str | None, now_ms: int,
             clock_trusted: bool = True) -> Verdict:
        """The decision the mode gives, from the decision the grants gave. Every DENY the mode
        adds has its own reason; the mode is named on the decision."""
        if decision.reason in (Reason.RATE_LIMITED, Reason.MALFORMED_CREDENTIAL, Reason.UNKNOWN_READER):
            return Verdict(replace(decision, door_mode=self.effective(decision.reader_id, now_ms, clock_trusted).mode.value), False)
        eff = self.effective(decision.reader_id, now_ms, clock_trusted)
        mode = eff.mode
        d = replace(decision, door_mode=mode.value)
        is_pin = kind == "pin"
        match mode:
            case Mode.CARD_OR_PIN | Mode.UNLOCKED:
                verdict = Verdict(d, False)
            case Mode.CARD_ONLY:
                verdict = Verdict(_deny(d, Reason.CARD_REQUIRED) if is_pin else d, False)
            case Mode.PIN_ONLY:
                verdict = Verdict(d if is_pin else _deny(d, Reason.PIN_REQUIRED), False)
            case Mode.FACILITY_CODE:
                verdict = Verdict(self._facility(d, card_number, eff), False)
            case Mode.LOCKED if eff.admit_roles is not None:  # lockdown: its own privilege, not `override`
                admitted = d.granted and d.user_id is not None and bool(eff.admit_roles & self.roles_of(d.user_id))
                verdict = Verdict(d if admitted else _deny(d, Reason.LOCKDOWN), False)
            case Mode.LOCKED:
                verdict = Verdict(d if d.granted and self._overrides(d.user_id) else _deny(d, Reason.DOOR_LOCKED), False)
            case Mode.CARD_AND_PIN:
                verdict = self._card_and_pin(d, is_pin, eff, now_ms)
        if verdict.decision.granted:
            self._first_person_in(verdict.decision, now_ms, clock_trusted)
        return verdict

    def _card_and_pin(self, d: AccessDecision, is_pin: bool, eff: EffectiveMode, now_ms: int) -> Verdict:
        policy = self.policy_for(d.reader_id)
        if not is_pin:
            if not d.granted:
                return Verdict(d, False)
            if d.user_id is None:  # a card bound to readers only: no holder whose PIN could follow
                return Verdict(_deny(d, Reason.PIN_REQUIRED), False)
            timeout = policy.pin_timeout_s if policy and policy.pin_timeout_s else self.pin_timeout_s
            self._pairings[eff.door] = _Pairing(d.user_id, now_ms + int(timeout * 1000), d.zone_id, d.zone_name, d.user_name)
            return Verdict(_deny(d, Reason.PIN_REQUIRED), False)
        pairing = self._pairings.get(eff.door)
        if pairing is None:
            return Verdict(_deny(d, Reason.CARD_REQUIRED), False)
        if now_ms >= pairing.until_ms:
            del self._pairings[eff.door]
            return Verdict(_deny(d, Reason.PIN_TIMEOUT), False)
        if not d.granted or d.user_id != pairing.user_id:
            # The PIN is wrong for this card (unknown, or another holder's): a guess. The pairing
            # stays until its window ends, so a mistyped PIN can be typed again.
            return Verdict(_deny(replace(d, user_id=pairing.user_id, user_name=pairing.user_name), Reason.PIN_MISMATCH), True)
        del self._pairings[eff.door]
        return Verdict(replace(d, zone_id=pairing.zone_id or d.zone_id, zone_name=pairing.zone_name or d.zone_name), False)

    def _facility(self, d: AccessDecision, card_number: str | None, eff: EffectiveMode) -> AccessDecision:
        """Degraded mode: a card the cache does not know is admitted by its facility code. A card
        the cache knows is judged as always (a revoked card stays out)."""
        if d.granted or d.reason is not Reason.NO_GRANT or card_number is None or d.user_id is not None:
            return d
        policy = self.policy_for(d.reader_id)
        codes = policy.facility_codes if policy else frozenset()
        facility, sep, _ = card_number.partition(":")
        if sep and facility.isdigit() and int(facility) in codes:
            return replace(d, decision=Decision.GRANT, reason=None, user_name=f"facility {int(facility)}")
        return _deny(d, Reason.FACILITY_CODE_MISMATCH)

    def _overrides(self, user_id: str | None) -> bool:
        return user_id is not None and bool(self.override_roles & self.roles_of(user_id))

    def _first_person_in(self, d: AccessDecision, now_ms: int, clock_trusted: bool) -> None:
        policy = self.policy_for(d.reader_id)
        if policy is None or policy.first_person_in is None or not clock_trusted:
            return
        seg = self._segment(policy, now_ms)
        if seg is None or _mode(seg.value, self.default_mode) is not Mode.UNLOCKED:
            return
        started = self._started.get(policy.id)
        if started is not None and started.segment_from_ms == seg.from_ms:
            return
        if policy.first_person_in.admits(self.roles_of(d.user_id) if d.user_id else frozenset()):
            self._started[policy.id] = _Started(seg.from_ms, d.user_id)
            self.slots_started += 1

    def schedule_open(self, schedule_id: str, now_ms: int) -> bool:
        """A grant's weekly pattern: open inside one of its slots. A schedule the cache does not
        hold is closed (fail-secure, and OUT_OF_SCHEDULE tells the technician which)."""
        index = self._indexes.get(schedule_id)
        return index is not None and index.at(now_ms) is not None

    def carry_state(self, previous: "DoorModes") -> None:
        """A new cache version rebuilds this object; pairings and started slots carry over."""
        self._pairings = previous._pairings
        self._started = previous._started
        self._last = previous._last
        self.slots_started = previous.slots_started


def _mode(value: str | None, default: Mode) -> Mode:
    return Mode(value) if value in MODES else default


def _deny(d: AccessDecision, reason: Reason) -> AccessDecision:
    return replace(d, decision=Decision.DENY, reason=reason)
