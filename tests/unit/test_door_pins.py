"""A door's pin list has one copy (DoorSection.pins) that the config checks, doctor and the daemon read."""

from __future__ import annotations

import pytest

from bridge.config import DOOR_PIN_FIELDS, ConfigError, DoorSection, from_dict
from bridge.cli.doctor import configured_pins


def test_pins_names_each_function_the_door_uses() -> None:
    door = DoorSection(relay_pin=17, rex_pin=27, buzzer_pin=22)
    assert door.pins() == {"relay_pin": 17, "rex_pin": 27, "buzzer_pin": 22}
    assert set(DOOR_PIN_FIELDS) >= set(door.pins())


def test_doctor_lists_exactly_the_doors_pins() -> None:
    config = from_dict({"gpio": {"pin_factory": "mock"},
                        "doors": {"main": {"relay_pin": 17, "door_switch_pin": 23, "aux_relay_pin": 24}}})
    assert sorted(use.pin for use in configured_pins(config)) == [17, 23, 24]


def test_an_emergency_input_on_a_door_pin_is_named_by_that_pin() -> None:
    with pytest.raises(ConfigError, match=r"GPIO 23 is also doors\.main\.door_switch_pin"):
        from_dict({"gpio": {"pin_factory": "mock"}, "doors": {"main": {"relay_pin": 17, "door_switch_pin": 23}},
                   "emergency": {"fire_pin": 23}})
