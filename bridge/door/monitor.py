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
from typing import Any

import structlog
from gpiozero import Button, DigitalInputDevice, DigitalOutputDevice

from bridge.config import DoorSection
from bridge.door.alarm import FORCED_OPEN, HELD_OPEN, AlarmTimes, DoorAlarm, Step
from bridge.door.feedback import Feedback
from bridge.door.relay import Relay
from bridge.door.timed_output import TimedOutput
from verifier.types import AccessDecision

log = structlog.get_logger()

EventSink = Callable[[str, dict[str, Any]], None]

# A door contact must read the same for this long before the new position counts. gpiozero's
# `bounce_time` is a lock-out after the first edge (and MockPin does not implement it): it can drop
# the last edge of a burst and leave the position wrong, which would raise a false held-open alarm.
DEFAULT_SETTLE_S = 0.05
# REX is a push button: only the press edge matters, so gpiozero's lock-out is the right tool.
REX_BOUNCE_S = 0.05


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:200]


class DoorMonitor:
    """The door's inputs and feedback outputs around one `Relay`: the I/O shell of `DoorAlarm`.

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

        self._alarm = DoorAlarm(AlarmTimes(cfg.pulse_s, cfg.forced_open_grace_s, cfg.held_open_s))
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
                self._apply(self._alarm.open_at_start(self._clock()))
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
            self._alarm.authorise(kind, self._clock())
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
                position = "open" if self._alarm.is_open else "closed"
            alarm = next(iter(self._alarm.active_alarms()), None)
            return {"relay": "energised" if self.door.energised else "released",
                    "position": position, "alarm": alarm}

    def alarms(self) -> list[str]:
        """Every alarm raised now (`state()` names the most serious one): a forced door left open is both."""
        with self._lock:
            return self._alarm.active_alarms()

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
            self._alarm.authorise("rex", self._clock())
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
            self._apply(self._alarm.position(not self.switch.is_active, self._clock(), self.door.energised))

    def _held_too_long(self, opening: int) -> None:
        with self._lock:
            if self._closed:
                return
            # `held`: held unlocked by the door's mode (an `unlocked` slot), where open is what it is for.
            self._apply(self._alarm.held_timer(opening, held_by_mode=getattr(self.door, "held", False)))

    def _apply(self, step: Step) -> None:
        """Carry out what the alarm machine decided; called under the lock."""
        if step.cancel_held and self._held is not None:
            self._held.cancel()
            self._held = None
        if step.cleared and self.aux is not None and self.cfg.aux_relay_mode == "alarm":
            self._aux_off()
        for kind, body in step.events:
            self._emit(kind, body)
        if step.raised is not None:
            self._alarm_raised(step.raised)
        if step.arm_held is not None:
            self._held = threading.Timer(self.cfg.held_open_s, self._held_too_long, args=(step.arm_held,))
            self._held.daemon = True
            self._held.start()

    def _alarm_raised(self, kind: str) -> None:
        if self.aux is not None and self.cfg.aux_relay_mode == "alarm":
            assert self._aux_out is not None
            try:
                self._aux_out.on()
            except Exception as e:  # noqa: BLE001 - any GPIO failure ends with the aux relay off
                self._aux_failed(e)
        if kind == FORCED_OPEN:
            self._log.warning("door_forced_open",
                              check="door closer and strike (does the door latch?), then who was there: "
                                    "door-bridge events tail")
        elif kind == HELD_OPEN:
            self._log.warning("door_held_open", held_open_s=self.cfg.held_open_s,
                              check="door closer, a wedge or propped door, then who was there: "
                                    "door-bridge events tail")

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
