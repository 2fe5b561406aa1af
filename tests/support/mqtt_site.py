"""A site for the MQTT tests: one console reader and one door, with the mqtt section pointed at a test broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.harness import (
    Site,
    door_records,
    make_config,
)
from tests.support.mqtt_broker import Broker

READER = "R1"
VALID, REVOKED = "6B06C2A25E99C68EDCBE", "04A22C1A7B3F80"
BASE = "door-bridge/BRIDGE-T"


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.kill()


def config(tmp_path: Path, port: int, **mqtt):
    tmp_path.mkdir(parents=True, exist_ok=True)
    site = Site()
    site.install(tmp_path, door_records(READER))
    return make_config(tmp_path, site, [{"type": "console", "id": READER}],
                       doors={"main": {"relay_pin": 17, "pulse_s": 0.2, "door_switch_pin": 22, "held_open_s": 0.3,
                                       "forced_open_grace_s": 0.2}},
                       mqtt={"enabled": True, "port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.3, **mqtt})

