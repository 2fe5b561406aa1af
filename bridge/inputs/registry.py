"""Reader type (config `type = "…"`) → the module that builds it. Imports are lazy so a Pi
without, say, an NFC frontend never imports nfcpy."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bridge.inputs.base import Input, InputContext

if TYPE_CHECKING:
    from bridge.config import ReaderConfig

MODULES = {
    "console": "bridge.inputs.console",
    "serial": "bridge.inputs.serial_scanner",
    "evdev": "bridge.inputs.evdev_scanner",
    "keypad": "bridge.inputs.keypad",
    "nfc": "bridge.inputs.nfc",
    "wiegand": "bridge.inputs.wiegand",
    "osdp": "bridge.inputs.osdp_reader",
}


def create_input(cfg: ReaderConfig, context: InputContext) -> Input:
    return importlib.import_module(MODULES[cfg.type]).create(cfg, context)
