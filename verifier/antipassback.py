"""Anti-passback for an area with entry and exit readers on this bridge: a pure state machine.

Presence (who is in which area, through which reader, since when) is the only state; it is
advanced by the GRANTs it is told about (`passed`) and by forgiveness, and every change is handed
to the shell (`take_changes`) which keeps it in SQLite, so it survives a restart.

- `soft`: every pass is granted; a pass against the presence (entering while inside, leaving
  while outside) is recorded as an `ANTIPASSBACK_VIOLATION` event.
- `hard`: such a pass is denied (`ANTIPASSBACK`) and recorded.
- `timed`: no re-entry at the same reader within `reentry_s` of the last pass there (`ANTIPASSBACK`).

A holder the area has no presence for (never seen, or forgiven) may pass either way: forgiveness
is how a site recovers from a tailgate or a door held for someone, so it must not lock anyone out.
A pass counts when the door is unlocked for it (the GRANT), not when the position switch moves:
a holder who badges and turns back must be forgiven.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from verifier.emergency import EmergencyEvent


class ApbMode(StrEnum):
    SOFT = "soft"
    HARD = "hard"
    TIMED = "timed"


@dataclass(frozen=True, slots=True)
class Area:
    name: str
    entry_readers: frozenset[str]
    exit_readers: frozenset[str]
    mode: ApbMode
    reentry_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Presence:
    """The last pass of one holder in one area. `inside` False: the holder left through an exit."""

    area: str
    holder: str
    inside: bool
    reader_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """For the store: `presence` None removes the row (forgiven)."""

    area: str
    holder: str
    presence: Presence | None


@dataclass(frozen=True, slots=True)
class ApbVerdict:
    allow: bool
    violation: str | None = None  # already_inside | not_inside | reentry_too_soon
    area: str | None = None


class AntiPassback:
    def __init__(self, areas: list[Area], presence: list[Presence] | None = None) -> None:
        self.areas = {a.name: a for a in areas}
        self._by_reader: dict[str, tuple[Area, bool]] = {}
        for a in areas:
            for r in a.entry_readers:
                self._by_reader[r] = (a, True)
            for r in a.exit_readers:
                self._by_reader[r] = (a, False)
        self.presence: dict[tuple[str, str], Presence] = {(p.area, p.holder): p for p in presence or []}
        self._changes: list[PresenceChange] = []
        self._events: list[EmergencyEvent] = []

    def check(self, holder: str, reader_id: str, now_ms: int) -> ApbVerdict:
        found = self._by_reader.get(reader_id)
        if found is None:
            return ApbVerdict(True)
        area, entering = found
        last = self.presence.get((area.name, holder))
        if last is None:
            return ApbVerdict(True, None, area.name)
        if area.mode is ApbMode.TIMED:
            if last.reader_id == reader_id and now_ms - last.at_ms < area.reentry_s * 1000:
                return self._violation(area, holder, reader_id, "reentry_too_soon", last, allow=False)
            return ApbVerdict(True, None, area.name)
        if last.inside == entering:
            why = "already_inside" if entering else "not_inside"
            return self._violation(area, holder, reader_id, why, last, allow=area.mode is ApbMode.SOFT)
        return ApbVerdict(True, None, area.name)

    def _violation(self, area: Area, holder: str, reader_id: str, why: str, last: Presence, *, allow: bool) -> ApbVerdict:
        self._events.append(EmergencyEvent("ANTIPASSBACK_VIOLATION", "antipassback_violation", "warning", {
            "area": area.name, "mode": area.mode.value, "readerId": reader_id, "holder": holder, "violation": why,
            "granted": allow, "lastReaderId": last.reader_id, "lastAtMs": last.at_ms}))
        return ApbVerdict(allow, why, area.name)

    def passed(self, holder: str, reader_id: str, now_ms: int) -> None:
        """A GRANT at `reader_id`: the holder is now inside (entry) or outside (exit) its area."""
        found = self._by_reader.get(reader_id)
        if found is None:
            return
        area, entering = found
        p = Presence(area.name, holder, entering, reader_id, now_ms)
        self.presence[(area.name, holder)] = p
        self._changes.append(PresenceChange(area.name, holder, p))

    def forgive(self, area: str | None, holder: str | None, by: str, now_ms: int) -> int:
        """Forget presence (one area or all, one holder or all): everyone may pass either way once."""
        gone = [k for k in self.presence if (area is None or k[0] == area) and (holder is None or k[1] == holder)]
        for k in gone:
            del self.presence[k]
            self._changes.append(PresenceChange(k[0], k[1], None))
        self._events.append(EmergencyEvent("ANTIPASSBACK_FORGIVEN", "antipassback_forgiven", "info", {
            "area": area, "holder": holder, "by": by, "forgiven": len(gone), "atMs": now_ms}))
        return len(gone)

    def take_changes(self) -> list[PresenceChange]:
        taken, self._changes = self._changes, []
        return taken

    def take_events(self) -> list[EmergencyEvent]:
        taken, self._events = self._events, []
        return taken

    def status(self) -> dict[str, object]:
        return {name: {"mode": a.mode.value, "inside": sum(1 for (ar, _), p in self.presence.items() if ar == name and p.inside)}
                for name, a in sorted(self.areas.items())}
