"""Reader type (config `type = "…"`) → the module that builds it. Imports are lazy so a Pi
without, say, an NFC frontend never imports nfcpy."""

from __future__ import annotations

import importlib
from typing import Any

from bridge.inputs.base import Input
from verifier.wiegand_formats import WiegandFormat

MODULES = {
    "console": "bridge.inputs.console",
    "serial": "bridge.inputs.serial_scanner",
    "evdev": "bridge.inputs.evdev_scanner",
    "keypad": "bridge.inputs.keypad",
    "nfc": "bridge.inputs.nfc",
    "wiegand": "bridge.inputs.wiegand",
    "osdp": "bridge.inputs.osdp_reader",
}


def create_input(cfg: Any, *, pin_factory: Any = None, site_formats: dict[str, WiegandFormat] | None = None) -> Input:
    """`site_formats`: the config's `[wiegand_formats]`, built (`Config.site_wiegand_formats()`)."""
    module = importlib.import_module(MODULES[cfg.type])
    if cfg.type == "wiegand":
        return module.create(cfg, pin_factory=pin_factory, site_formats=site_formats)
    if cfg.type == "osdp":
        return module.create(cfg, site_formats=site_formats)
    return module.create(cfg)
