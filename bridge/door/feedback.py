"""The LED and buzzer at a door: one pattern per decision, and the offline wink in between.

Patterns run on the output timeline (bridge/door/timed_output.py), so the decision worker that
calls `Feedback.show()` never starts or joins a thread. OSDP readers play the same patterns on
their own LED and buzzer (bridge/inputs/osdp_logic.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from gpiozero import LED, Buzzer

from bridge.config import DoorSection
from bridge.door.timed_output import Scheduled, TimedOutput, shared_timeline
from verifier.types import AccessDecision, Reason


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
