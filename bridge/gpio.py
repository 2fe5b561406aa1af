"""Choosing the gpiozero pin factory once, at start-up, from config or environment.

The same `DigitalOutputDevice(17)` line then runs on a Pi (lgpio / RPi.GPIO), on a laptop and in
tests (MockFactory, whose pins keep a timestamped `states` history).
"""

from __future__ import annotations

import os
from typing import Any


class GpioUnavailable(Exception):
    pass


def make_pin_factory(name: str) -> Any:
    if name == "auto":
        name = os.environ.get("GPIOZERO_PIN_FACTORY", "auto").lower()
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
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
