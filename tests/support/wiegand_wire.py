"""Wiegand frames sent to a reader as its D0/D1 pin edges (gpiozero MockFactory), with the timing a reader uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from gpiozero.pins.mock import MockFactory

from bridge.inputs.wiegand import WiegandReaderConfig

BIT_SPACING_S = 0.0015


@pytest.fixture
def factory() -> Iterable[MockFactory]:
    pins = MockFactory()
    yield pins
    pins.reset()


Train = tuple[int, ...] | float  # a frame, or a pause in seconds (a person between two keys)


def send(factory: MockFactory, cfg: WiegandReaderConfig, *frames: Train) -> None:
    """Pulse the lines as a reader does, then stay quiet for just over frame_gap_ms."""
    d0, d1 = factory.pin(cfg.d0_pin), factory.pin(cfg.d1_pin)
    for frame in frames:
        if isinstance(frame, float):
            time.sleep(frame)
            continue
        for bit in frame:
            line = d1 if bit else d0
            line.drive_low()
            time.sleep(0.00005)
            line.drive_high()
            time.sleep(BIT_SPACING_S)
        time.sleep(1.1 * cfg.frame_gap_ms / 1000)  # sleep never returns early

