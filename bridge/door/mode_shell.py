"""Applies door-mode effects: holds or releases the relay, writes the audit event and journal line.

The decisions about modes are all in `verifier.door_mode` (pure, clock injected); this is the
imperative shell around it. It runs on the decision worker thread (which owns the verifier and the
outbox) after every decision batch — a first-person-in GRANT unlocks at once — and once a second
from the daemon's timer, so a slot's start and end take effect within a second.

Safety:
- nothing here runs before READY: `armed` is set by the daemon after start-up, so the relay is
  never energised at start or restart, whatever the schedule says;
- a door is held only while the clock is trusted (`clock_trusted`, injected): the verifier then
  reports the schedule's fallback mode instead of `unlocked`;
- every change of effective mode is applied at once (also while the door is held) and is one audit
  event `DOOR_MODE_CHANGED` and one journal line `door_mode_changed`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import structlog

from bridge.door.relay import Relay
from verifier.door_mode import EffectiveMode, Mode
from verifier.timeutil import iso_ms, to_ms

log = structlog.get_logger()

# The trusted-time floor (issue 10, engineer sec-b) is not on main yet: until it lands, the daemon
# passes this, and `clock_trusted` is the single input to wire to it.
def always_trusted() -> bool:
    return True


class ModeShell:
    def __init__(self, *, verifier: Any, doors: dict[str, Relay], reader_door: dict[str, str],
                 record: Callable[[str, str, dict[str, Any]], None], clock: Callable[[], datetime], clock_trusted: Callable[[], bool],
                 door_hold: Callable[[str, int], bool | None] | None = None) -> None:
        self.verifier = verifier
        self.doors = doors
        self.reader_door = reader_door
        self.record = record  # the daemon's door-event path: audit row, journal, metrics listeners
        self.clock = clock
        self.clock_trusted = clock_trusted
        # The emergency precedence for a door no reader belongs to (a pure egress door): the
        # readers' effective modes carry it for every other door.
        self.door_hold = door_hold
        self.armed = False
        # What `status` shows, written here (worker thread), read by the status socket.
        self.view: dict[str, dict[str, Any]] = {}

    def apply(self) -> None:
        if not self.armed:
            return
        now_ms = to_ms(self.clock())
        trusted = self.clock_trusted()
        modes = self.verifier.door_modes()
        readers = sorted(self.reader_door)
        changes = modes.changes(readers, now_ms, trusted)
        effective = {r: modes.effective(r, now_ms, trusted) for r in readers}
        relay_changes = self._relays(effective, now_ms)
        for change in changes:
            door = self.reader_door.get(change.reader_id, "")
            held = self.doors[door].held if door in self.doors else False
            body = {"readerId": change.reader_id,
                    "from": change.before.value if change.before else None, "to": change.after.mode.value,
                    "why": change.after.why, "layer": change.after.layer, "relay": "held" if held else "normal",
                    "nextChange": iso_ms(change.after.next_change_ms),
                    "nextMode": change.after.next_mode.value if change.after.next_mode else None,
                    "clockTrusted": trusted}
            self.record(door, "DOOR_MODE_CHANGED", body)  # logs loudly itself if the outbox fails
            log.info("door_mode_changed", door=door or "-", reader=change.reader_id,
                     mode_from=body["from"] or "-", mode=body["to"], layer=body["layer"], why=body["why"], relay=body["relay"],
                     next_change=body["nextChange"] or "-")
        for door, held in relay_changes:
            log.info("door_relay_held" if held else "door_relay_released", door=door)
        self.view = {door: {"relay_held": d.held,
                            "readers": {r: effective[r].as_status() for r in readers if self.reader_door.get(r) == door}}
                     for door, d in self.doors.items()}

    def _relays(self, effective: dict[str, EffectiveMode], now_ms: int) -> list[tuple[str, bool]]:
        """A door is held open while any of its readers' effective mode is `unlocked`."""
        out = []
        for name, door in self.doors.items():
            mine = [e for r, e in effective.items() if self.reader_door.get(r) == name]
            want = any(e.mode is Mode.UNLOCKED for e in mine)
            if not mine and self.door_hold is not None:
                want = bool(self.door_hold(name, now_ms))
            if want != door.held:
                if want:
                    door.hold()
                else:
                    door.release_hold()
                out.append((name, want))
        return out


