"""The door's alarm logic as a pure state machine: positions and times in, events and timer requests out.

`DoorMonitor` (bridge/door/monitor.py) is the shell around it: it owns the pins, the settle and
held-open timers, the aux relay and the outbox sink, and it feeds this machine what it saw and when.
Kept apart, like `WedgeDecoder` or `KeypadBuffer`, so the rules — one opening event per opening,
forced vs authorised, held open, what a closing clears, a late timer for an earlier opening does
nothing — are tested with plain numbers and no threads or pins.

Times are seconds on any monotonic clock, passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORCED_OPEN = "DOOR_FORCED_OPEN"
HELD_OPEN = "DOOR_HELD_OPEN"
OPENED = "DOOR_OPENED"
CLOSED = "DOOR_CLOSED"

# Most serious first: `state()` names the first one raised in this order.
_SEVERITY = (FORCED_OPEN, HELD_OPEN)
ALARM_STATE = {FORCED_OPEN: "forced_open", HELD_OPEN: "held_open"}


@dataclass(frozen=True, slots=True)
class AlarmTimes:
    """The three durations the rules need, from the door's config section."""

    pulse_s: float
    forced_open_grace_s: float
    held_open_s: float


@dataclass(frozen=True, slots=True)
class Step:
    """What the shell must do after one input, in this order.

    `events` go to the audit sink; `raised` is the alarm this step raised (the shell switches an
    alarm-mode aux relay on and logs a warning); `cleared` the alarms a closing ended (aux off);
    `arm_held` asks for the held-open timer for that opening after `held_open_s`; `cancel_held`
    drops a pending one.
    """

    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    raised: str | None = None
    cleared: tuple[str, ...] = ()
    arm_held: int | None = None
    cancel_held: bool = False


NOTHING = Step()


@dataclass(slots=True)
class DoorAlarm:
    """One door's position and alarms. Not thread-safe: the shell calls it under its own lock."""

    times: AlarmTimes
    is_open: bool = False
    opened_at: float = 0.0
    opening: int = 0  # counts openings, so a late timer for an earlier one does nothing
    alarms: list[str] = field(default_factory=list)
    authorised_at: float | None = None
    authorised_by: str = "relay"

    def authorise(self, kind: str, now: float) -> None:
        """The relay was just pulsed for `kind` ("grant", "rex"): an opening in the next while is expected."""
        self.authorised_at = now
        self.authorised_by = kind

    def open_at_start(self, now: float) -> Step:
        """Found open at start: whether it was authorised is unknowable, so no forced-open alarm,
        but a door propped open across a restart is still reported as held open."""
        return Step(arm_held=self._begin_opening(now))

    def position(self, is_open: bool, now: float, relay_energised: bool) -> Step:
        """The contact has settled at `is_open`; a reading equal to the known position is no event."""
        if is_open and not self.is_open:
            opening = self._begin_opening(now)
            by = self._authorisation(now, relay_energised)
            if by is None:
                self.alarms.append(FORCED_OPEN)
                return Step(events=((FORCED_OPEN, {}),), raised=FORCED_OPEN, arm_held=opening)
            return Step(events=((OPENED, {"authorisedBy": by}),), arm_held=opening)
        if not is_open and self.is_open:
            self.is_open = False
            cleared, self.alarms = tuple(self.alarms), []
            body = {"openForS": round(now - self.opened_at, 1), "alarmCleared": list(cleared)}
            return Step(events=((CLOSED, body),), cleared=cleared, cancel_held=True)
        return NOTHING

    def held_timer(self, opening: int, held_by_mode: bool) -> Step:
        """The held-open timer for `opening` ran out.

        A door held unlocked by its mode (an `unlocked` slot) is meant to stand open: look again
        later, so a door still open after the hold ends is reported.
        """
        if not self.is_open or opening != self.opening or HELD_OPEN in self.alarms:
            return NOTHING  # closed since, a later opening, or already raised: one alarm per opening
        if held_by_mode:
            return Step(arm_held=opening)
        self.alarms.append(HELD_OPEN)
        return Step(events=((HELD_OPEN, {"heldOpenS": self.times.held_open_s}),), raised=HELD_OPEN)

    def active_alarms(self) -> list[str]:
        """Every alarm raised now, most serious first (a forced door left open is both)."""
        return [ALARM_STATE[a] for a in _SEVERITY if a in self.alarms]

    def _begin_opening(self, now: float) -> int:
        self.is_open = True
        self.opened_at = now
        self.opening += 1
        self.alarms = []
        return self.opening

    def _authorisation(self, now: float, relay_energised: bool) -> str | None:
        """Who let this opening happen, or None when nobody did (a forced opening).

        Authorised while the relay is energised, and for `forced_open_grace_s` after the pulse
        that the last grant or REX started would have ended (a slow push on a released strike).
        """
        window = self.times.pulse_s + self.times.forced_open_grace_s
        if self.authorised_at is not None and now - self.authorised_at <= window:
            return self.authorised_by
        if relay_energised:
            return "relay"
        return None
