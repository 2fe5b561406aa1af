"""Building blocks for config models, shared by `bridge.config` and the input modules.

Kept apart from `bridge.config` so an input module can define its own reader model without an
import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors and TOML types are taken as they are (no "17" → 17)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Seconds = Annotated[float, Field(gt=0)]
GpioPin = Annotated[int, Field(ge=0, le=53)]
# TOML has no path type: a path is a string, so paths are the one place strings are coerced.
FilePath = Annotated[Path, Field(strict=False)]
ReaderId = Annotated[str, Field(min_length=1, max_length=128)]


class EvdevDeviceConfig(StrictModel):
    """What every evdev reader (wedge scanner, keypad) needs: which device, and how to hold it."""

    id: ReaderId
    door: str = "main"
    # `/dev/input/eventN`, a stable `/dev/input/by-id/...` link, the device name as `door-bridge
    # doctor` prints it, or USB `vendor:product` in hex (`0c2e:0b61`).
    device: str = Field(min_length=1)
    # Exclusive grab: scans and PINs never reach a console or desktop session.
    grab: bool = True
    reconnect_s: Seconds = 2.0
