"""Everything at a door besides the main relay: position switch, request-to-exit, LED, buzzer, aux relay.

The main relay belongs to `bridge.door.relay.Relay`; this module watches what the door then does and tells
the people in front of it what happened.

Threads: gpiozero calls the switch and REX handlers from its own callback thread (on MockFactory,
from whichever thread drives the pin), and the settle and held-open timers are `threading.Timer`
threads. So `on_event(type, body)` is called from those threads, one call at a time (under this
object's lock, so events arrive in the order they happened): it must be thread-safe and quick — the
daemon appends to the outbox there. An exception from `on_event` is logged and swallowed: a full
disk must not stop the alarm logic or a request-to-exit.

Events (body always carries `door`):
- `REX`: the exit button was pressed; the relay is pulsed after the event is handed over.
- `DOOR_OPENED` {`authorisedBy`: "grant" | "rex" | "relay"}: an authorised opening.
- `DOOR_FORCED_OPEN`: an opening with no authorisation; emitted *instead of* `DOOR_OPENED`, so each
  opening yields exactly one opening event.
- `DOOR_HELD_OPEN` {`heldOpenS`}: still open `held_open_s` after it opened (any opening, also a
  forced one — a forced door that stays open needs someone to go and shut it).
- `DOOR_CLOSED` {`openForS`, `alarmCleared`: list of the alarm event types this closing clears,
  empty after a normal opening}.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from gpiozero import LED, Button, Buzzer, DigitalInputDevice, DigitalOutputDevice

from bridge.config import DoorSection
from bridge.door.relay import Relay
from bridge.door.timed_output import Scheduled, TimedOutput, shared_timeline
from verifier.types import AccessDecision, Reason

log = structlog.get_logger()

EventSink = Callable[[str, dict[str, Any]], None]

FORCED_OPEN = "DOOR_FORCED_OPEN"
HELD_OPEN = "DOOR_HELD_OPEN"
_ALARM_STATE = {FORCED_OPEN: "forced_open", HELD_OPEN: "held_open"}

# A door contact must read the same for this long before the new position counts. gpiozero's
# `bounce_time` is a lock-out after the first edge (and MockPin does not implement it): it can drop
# the last edge of a burst and leave the position wrong, which would raise a false held-open alarm.
DEFAULT_SETTLE_S = 0.05
# REX is a push button: only the press edge matters, so gpiozero's lock-out is the right tool.
REX_BOUNCE_S = 0.05


@dataclass(frozen=True, slots=True)
class Blink:
    """One LED or buzzer pattern: `n` cycles of on/off (n=None repeats until replaced)."""

    on_s: float
    off_s: float
    n: int | None

    @property
    def duration_s(self) -> float:
        return (self.n or 0) * (self.on_s + self.off_s)


# Patterns a person at the door can tell apart without looking closely.
DENY_LED = Blink(0.15, 0.15, 3)
DENY_BEEPS = Blink(0.1, 0.1, 2)
GRANT_BEEP = Blink(0.1, 0.0, 1)
RATE_LIMITED_BEEP = Blink(1.0, 0.0, 1)
OFFLINE_IDLE_LED = Blink(0.1, 1.9, None)  # a short wink every 2 s: "working, but not in touch"


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:200]


def _start(device: TimedOutput, pattern: Blink) -> None:
    device.blink(pattern.on_s, pattern.off_s, pattern.n)


class Feedback:
    """LED and buzzer patterns per decision, and the offline idle wink in between.

    Either device may be absent. A feedback pattern takes the LED over; when it ends, the idle
    wink resumes if the bridge is still offline. Patterns and the idle restore run on the output
    timeline (bridge/door/timed_output.py): `show()` is called by the decision worker and must not start
    or join a thread.
    """

    def __init__(self, cfg: DoorSection, pin_factory: Any) -> None:
        self._pulse_s = cfg.pulse_s
        self._lock = threading.Lock()
        self._offline = False
        self._closing = False
        self._generation = 0
        self._restore: Scheduled | None = None
        self._timeline = shared_timeline()
        self.led: LED | None = None
        self.buzzer: Buzzer | None = None
        self._led_out: TimedOutput | None = None
        self._buzzer_out: TimedOutput | None = None
        try:
            if cfg.led_pin is not None:
                self.led = LED(cfg.led_pin, active_high=cfg.led_active_high, initial_value=False,
                               pin_factory=pin_factory)
                self._led_out = TimedOutput(self.led, self._timeline)
            if cfg.buzzer_pin is not None:
                self.buzzer = Buzzer(cfg.buzzer_pin, active_high=cfg.buzzer_active_high, initial_value=False,
                                     pin_factory=pin_factory)
                self._buzzer_out = TimedOutput(self.buzzer, self._timeline)
        except Exception:
            self.close()
            raise

    def show(self, decision: AccessDecision) -> None:
        if decision.granted:
            self._play(Blink(self._pulse_s, 0.0, 1), GRANT_BEEP)
        elif decision.reason is Reason.RATE_LIMITED:
            self._play(DENY_LED, RATE_LIMITED_BEEP)
        else:
            self._play(DENY_LED, DENY_BEEPS)

    def set_offline(self, offline: bool) -> None:
        with self._lock:
            if offline == self._offline:
                return
            self._offline = offline
            if self._restore is None:  # no pattern playing: switch the idle state now
                self._idle()

    def _play(self, led: Blink, beep: Blink) -> None:
        with self._lock:
            self._generation += 1
            if self._restore is not None:
                self._restore.cancel()
                self._restore = None
            if self._led_out is not None:
                _start(self._led_out, led)
                generation = self._generation
                self._restore = self._timeline.call_later(led.duration_s, lambda: self._pattern_done(generation))
            if self._buzzer_out is not None:
                _start(self._buzzer_out, beep)

    def _pattern_done(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:  # a newer pattern owns the LED
                return
            self._restore = None
            self._idle()

    def _idle(self) -> None:
        if self._led_out is None:
            return
        if self._offline:
            _start(self._led_out, OFFLINE_IDLE_LED)
        else:
            self._led_out.off()

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._generation += 1
            if self._restore is not None:
                self._restore.cancel()
                self._restore = None
        for out in (self._led_out, self._buzzer_out):
            if out is not None:
                out.close()
        for device in (self.led, self.buzzer):
            if device is not None:
                device.off()
                device.close()


class DoorMonitor:
    """The door's inputs and feedback outputs around one `Relay`.

    `switch.is_active` means *closed*: the contact's pull resistor is set from `door_closed_level`
    (pull-up when a closed door reads LOW, pull-down when it reads HIGH), so the line never floats
    and "active" is the closed level either way.
    """

    def __init__(self, door: Relay, cfg: DoorSection, pin_factory: Any, on_event: EventSink,
                 clock: Callable[[], float] = time.monotonic, *, settle_s: float = DEFAULT_SETTLE_S) -> None:
        self.door = door
        self.cfg = cfg
        self._on_event = on_event
        self._clock = clock
        self._settle_s = settle_s
        self._lock = threading.RLock()
        self._closed = False

        self._authorised_at: float | None = None
        self._authorised_by = "relay"
        self._open = False
        self._opened_at = 0.0
        self._opening = 0  # counts openings, so a late timer for an earlier one does nothing
        self._alarms: list[str] = []
        self._settle: threading.Timer | None = None
        self._held: threading.Timer | None = None

        self.aux: DigitalOutputDevice | None = None
        self._aux_out: TimedOutput | None = None
        self.switch: DigitalInputDevice | None = None
        self.rex: Button | None = None
        self.feedback_out: Feedback | None = None
        try:
            self.feedback_out = Feedback(cfg, pin_factory)
            if cfg.aux_relay_pin is not None:
                self.aux = DigitalOutputDevice(cfg.aux_relay_pin, active_high=cfg.aux_relay_active_high,
                                               initial_value=False, pin_factory=pin_factory)
                self._aux_out = TimedOutput(self.aux)
            if cfg.door_switch_pin is not None:
                self.switch = DigitalInputDevice(cfg.door_switch_pin, pull_up=cfg.door_closed_level == "low",
                                                 pin_factory=pin_factory)
            if cfg.rex_pin is not None:
                self.rex = Button(cfg.rex_pin, pull_up=True, bounce_time=REX_BOUNCE_S, pin_factory=pin_factory)
        except Exception:
            self.close()
            raise
        if self.switch is not None:
            if not self.switch.is_active:
                # Found open at start: whether it was authorised is unknowable, so no forced-open
                # alarm, but a door propped open across a restart is still reported as held open.
                self._log.info("door_open_at_start")
                self._begin_opening()
            self.switch.when_activated = self._switch_edge
            self.switch.when_deactivated = self._switch_edge
        if self.rex is not None:
            self.rex.when_pressed = self._rex_pressed

    @property
    def _log(self) -> Any:
        # Bound per call, not at construction, so the logging set-up in force now is the one used.
        return log.bind(door=self.door.name)

    # --- what the daemon calls ------------------------------------------------------------------

    def authorised(self, kind: str) -> None:
        """The relay was just pulsed for `kind` ("grant"): an opening in the next while is expected."""
        with self._lock:
            if self._closed:
                return
            self._authorised_at = self._clock()
            self._authorised_by = kind
            if self.aux is not None and self.cfg.aux_relay_mode == "grant":
                self._pulse_aux()

    def feedback(self, decision: AccessDecision) -> None:
        if self._closed or self.feedback_out is None:
            return
        try:
            self.feedback_out.show(decision)
        except Exception as e:  # noqa: BLE001 - feedback is a courtesy: it must never fail a decision
            self._log.error("feedback_failed", error=_why(e),
                            check="LED/buzzer wiring and GPIO permissions")

    def set_offline(self, offline: bool) -> None:
        """Offline (upstream unreachable or cache stale): the LED winks slowly between decisions."""
        if not self._closed and self.feedback_out is not None:
            self.feedback_out.set_offline(offline)

    def state(self) -> dict[str, Any]:
        with self._lock:
            if self.switch is None:
                position = "unknown"
            else:
                position = "open" if self._open else "closed"
            alarm = next((_ALARM_STATE[a] for a in (FORCED_OPEN, HELD_OPEN) if a in self._alarms), None)
            return {"relay": "energised" if self.door.energised else "released",
                    "position": position, "alarm": alarm}

    def alarms(self) -> list[str]:
        """Every alarm raised now (`state()` names the most serious one): a forced door left open is both."""
        with self._lock:
            return [_ALARM_STATE[a] for a in (FORCED_OPEN, HELD_OPEN) if a in self._alarms]

    def close(self) -> None:
        """Release both relays and silence the LED and buzzer; later callbacks do nothing. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for timer in (self._settle, self._held):
                if timer is not None:
                    timer.cancel()
        # Devices are closed outside the lock: closing may wait for gpiozero's callback thread,
        # which may itself be waiting for the lock.
        self.door.release()
        if self._aux_out is not None:
            self._aux_out.close()
        if self.aux is not None:
            self.aux.off()
            self.aux.close()
        for device in (self.switch, self.rex):
            if device is not None:
                device.close()
        if self.feedback_out is not None:
            self.feedback_out.close()

    # --- request to exit ------------------------------------------------------------------------

    def _rex_pressed(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._authorised_at = self._clock()
            self._authorised_by = "rex"
            self._emit("REX", {})  # recorded before the relay moves, like a decision
            try:
                self.door.pulse()
            except Exception as e:  # noqa: BLE001 - Relay has released; a gpiozero thread must not die
                self._log.error("rex_pulse_failed", error=_why(e),
                                check="relay wiring and GPIO permissions; door-bridge doctor")
            if self.aux is not None and self.cfg.aux_relay_mode == "grant":
                self._pulse_aux()

    # --- door position --------------------------------------------------------------------------

    def _switch_edge(self) -> None:
        """Any edge restarts the settle timer; the position is read once the contact is quiet."""
        with self._lock:
            if self._closed:
                return
            if self._settle is not None:
                self._settle.cancel()
            self._settle = threading.Timer(self._settle_s, self._settled)
            self._settle.daemon = True
            self._settle.start()

    def _settled(self) -> None:
        with self._lock:
            if self._closed or self.switch is None:
                return
            is_open = not self.switch.is_active
            if is_open and not self._open:
                self._opened()
            elif not is_open and self._open:
                self._door_closed()

    def _begin_opening(self) -> None:
        self._open = True
        self._opened_at = self._clock()
        self._opening += 1
        self._alarms = []
        self._held = threading.Timer(self.cfg.held_open_s, self._held_too_long, args=(self._opening,))
        self._held.daemon = True
        self._held.start()

    def _opened(self) -> None:
        self._begin_opening()
        by = self._authorisation()
        if by is None:
            self._raise_alarm(FORCED_OPEN, {})
            self._log.warning("door_forced_open",
                              check="door closer and strike (does the door latch?), then who was there: "
                                    "door-bridge events tail")
        else:
            self._emit("DOOR_OPENED", {"authorisedBy": by})

    def _authorisation(self) -> str | None:
        """Who let this opening happen, or None when nobody did (a forced opening).

        Authorised while the relay is energised, and for `forced_open_grace_s` after the pulse
        that the last grant or REX started would have ended (a slow push on a released strike).
        """
        recent = (self._authorised_at is not None
                  and self._clock() - self._authorised_at <= self.cfg.pulse_s + self.cfg.forced_open_grace_s)
        if recent:
            return self._authorised_by
        if self.door.energised:
            return "relay"
        return None

    def _held_too_long(self, opening: int) -> None:
        with self._lock:
            if self._closed or not self._open or opening != self._opening:
                return
            if getattr(self.door, "held", False):
                # Held unlocked by the door's mode (an `unlocked` slot): open is what it is for.
                # Look again later, so a door left open after the hold ends is still reported.
                self._held = threading.Timer(self.cfg.held_open_s, self._held_too_long, args=(opening,))
                self._held.daemon = True
                self._held.start()
                return
            self._raise_alarm(HELD_OPEN, {"heldOpenS": self.cfg.held_open_s})
            self._log.warning("door_held_open", held_open_s=self.cfg.held_open_s,
                              check="door closer, a wedge or propped door, then who was there: "
                                    "door-bridge events tail")

    def _door_closed(self) -> None:
        self._open = False
        if self._held is not None:
            self._held.cancel()
            self._held = None
        cleared, self._alarms = self._alarms, []
        if cleared and self.aux is not None and self.cfg.aux_relay_mode == "alarm":
            self._aux_off()
        self._emit("DOOR_CLOSED", {"openForS": round(self._clock() - self._opened_at, 1),
                                   "alarmCleared": cleared})

    def _raise_alarm(self, kind: str, body: dict[str, Any]) -> None:
        self._alarms.append(kind)
        self._emit(kind, body)
        if self.aux is not None and self.cfg.aux_relay_mode == "alarm":
            assert self._aux_out is not None
            try:
                self._aux_out.on()
            except Exception as e:  # noqa: BLE001 - any GPIO failure ends with the aux relay off
                self._aux_failed(e)

    # --- outputs and events ---------------------------------------------------------------------

    def _pulse_aux(self) -> None:
        assert self._aux_out is not None
        try:
            self._aux_out.blink(self.cfg.pulse_s, 0.0, 1)
        except Exception as e:  # noqa: BLE001 - any GPIO failure ends with the aux relay off
            self._aux_failed(e)

    def _aux_failed(self, e: Exception) -> None:
        self._aux_off()
        self._log.error("aux_relay_failed", error=_why(e), check="aux relay wiring and GPIO permissions")

    def _aux_off(self) -> None:
        assert self._aux_out is not None
        try:
            self._aux_out.off()
        except Exception as e:  # noqa: BLE001 - a dead GPIO chip must not stop the alarm path
            self._log.error("aux_relay_release_failed", error=_why(e),
                            check="aux relay wiring and GPIO permissions")

    def _emit(self, kind: str, body: dict[str, Any]) -> None:
        try:
            self._on_event(kind, {"door": self.door.name, **body})
        except Exception as e:  # noqa: BLE001 - the sink is the daemon's; its failure must not stop alarms
            self._log.error("door_event_not_recorded", type=kind, error=_why(e),
                            check="audit outbox (disk full? door-bridge status)")
