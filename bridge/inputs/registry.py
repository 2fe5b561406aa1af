"""Reader type (config `type = "…"`) → the module that builds it. Imports are lazy so a Pi
without, say, an NFC frontend never imports nfcpy."""

from __future__ import annotations

import importlib
from typing import Any

from bridge.inputs.base import Input

MODULES = {
    "console": "bridge.inputs.console",
    "serial": "bridge.inputs.serial_scanner",
    "evdev": "bridge.inputs.evdev_scanner",
    "keypad": "bridge.inputs.keypad",
    "nfc": "bridge.inputs.nfc",
    "wiegand": "bridge.inputs.wiegand",
}


def create_input(cfg: Any, *, pin_factory: Any = None) -> Input:
    module = importlib.import_module(MODULES[cfg.type])
    if cfg.type == "wiegand":
        return module.create(cfg, pin_factory=pin_factory)
    return module.create(cfg)
