"""Choosing the gpiozero pin factory once, at start-up, from config or environment.

The same `DigitalOutputDevice(17)` line then runs on a Pi (lgpio / RPi.GPIO), on a laptop and in
tests (MockFactory, whose pins keep a timestamped `states` history).
"""

from __future__ import annotations

import os
from typing import Any


class GpioUnavailable(Exception):
    pass


# A Raspberry Pi 4B revision code: its 40-pin header names GPIO0..GPIO27, which `gpio.chip` maps to
# line offsets 0..27 of the named chip (the layout of the Pi's own gpiochip).
_BOARDLESS_REVISION = 0xD03114


def make_pin_factory(name: str, chip: int | None = None) -> Any:
    """`chip`: with "lgpio", open /dev/gpiochip<chip> and skip Raspberry Pi board detection (any
    Linux board, a Pi 5's chip 4, or the kernel's gpio-sim lines in the system suite)."""
    if name == "auto":
        name = os.environ.get("GPIOZERO_PIN_FACTORY", "auto").lower()
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if name == "lgpio":
            return _lgpio_factory(chip)
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            return PiGPIOFactory()
        if name == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
        from gpiozero import Device

        return Device._default_pin_factory()
    except Exception as e:  # gpiozero raises many kinds here (ImportError, BadPinFactory, OSError)
        raise GpioUnavailable(
            f"no GPIO pin factory {name!r} on this machine ({type(e).__name__}: {e}); on a laptop set "
            "gpio.pin_factory = \"mock\" (or GPIOZERO_PIN_FACTORY=mock); on a Pi check that the user is in "
            "group gpio and /dev/gpiochip0 exists (door-bridge doctor)"
        ) from None


def _lgpio_factory(chip: int | None) -> Any:
    from gpiozero.pins.lgpio import LGPIOFactory, LGPIOPin

    import lgpio

    class LevelFirstPin(LGPIOPin):  # type: ignore[misc]
        """Claims an output line at its initial level in one request. gpiozero's LGPIOPin claims
        it at level 0 and then writes the state: for an active-low relay that is a brief LOW,
        i.e. the door released for the length of two system calls at every start."""

        def output_with_state(self, state: bool) -> None:
            self._pwm = None
            lgpio.gpio_claim_output(self.factory._handle, self._number, int(bool(state)))

    class DoorFactory(LGPIOFactory):  # type: ignore[misc]
        def __init__(self, chip: int | None) -> None:
            super().__init__(chip=chip)
            self.pin_class = LevelFirstPin
            self._boardless = chip is not None

        def _get_revision(self) -> int:
            return _BOARDLESS_REVISION if self._boardless else super()._get_revision()

    return DoorFactory(chip)
