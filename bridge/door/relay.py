"""The door relay. Never energised at start, restart or on an error path.

`initial_value=False` means the GPIO line is driven to the relay's inactive level the moment the
device is created (for active-low modules that is HIGH), so a daemon restart can never leave the
door released. Any failure while pulsing ends in `off()`.

The pulse's timing is a deadline on the process's one output timeline (bridge/door/timed_output.py), not
gpiozero's `blink()` thread: `pulse()` energises on the caller's thread and returns, so the decision
worker never waits for a thread start or join.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from gpiozero import DigitalOutputDevice

from bridge.config import DoorSection
from bridge.door.timed_output import TimedOutput

log = structlog.get_logger()


class Relay:
    def __init__(self, name: str, cfg: DoorSection, pin_factory: Any) -> None:
        self.name = name
        self.cfg = cfg
        self.relay = DigitalOutputDevice(
            cfg.relay_pin, active_high=cfg.relay_active_high, initial_value=False, pin_factory=pin_factory
        )
        self._out = TimedOutput(self.relay)
        self._lock = threading.RLock()  # release_hold -> release
        self.pulses = 0
        # Held open by the door's mode (`unlocked`, bridge/door/mode_shell.py): a GRANT then has
        # nothing to pulse, and a pulse's timer must not end the hold.
        self.held = False

    def pulse(self) -> None:
        """Energise for `pulse_s`, then release; a new pulse while open restarts the timer."""
        with self._lock:
            if self.held:
                return
            try:
                self._out.blink(self.cfg.pulse_s, 0.0, 1)
                self.pulses += 1
            except Exception:
                self.release()
                raise

    def hold(self) -> None:
        """Energise until `release_hold` (a mode change, stop, or an error path releases)."""
        with self._lock:
            try:
                self._out.on()
                self.held = True
            except Exception as e:
                self.held = False
                self.release()
                log.error("relay_hold_failed", door=self.name, error=str(e)[:200], check="GPIO wiring and permissions")

    def release_hold(self) -> None:
        with self._lock:
            self.held = False
            self.release()

    def release(self) -> None:
        try:
            self._out.off()
        except Exception as e:  # a dead GPIO chip must not stop the shutdown path
            log.error("relay_release_failed", door=self.name, error=str(e), check="GPIO wiring and permissions")

    @property
    def energised(self) -> bool:
        return bool(self.relay.value)

    def close(self) -> None:
        self.release()
        try:
            self._out.close()
        finally:
            self.relay.close()
