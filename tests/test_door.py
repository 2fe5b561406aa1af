"""The relay through gpiozero's MockFactory: pin histories, not prints."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from bridge.config import DoorSection
from bridge.door import Door
from tests.harness import relay_pulses


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def _wait_released(pin, timeout=5.0):
    deadline = time.monotonic() + timeout
    while pin.state or len(pin.states) < 3:
        assert time.monotonic() < deadline, "relay never released"
        time.sleep(0.01)


def test_relay_is_never_energised_at_start(factory):
    door = Door("main", DoorSection(relay_pin=17, pulse_s=0.2), factory)
    pin = factory.pin(17)
    assert [s.state for s in pin.states] == [False]
    assert not door.energised
    door.close()


def test_active_low_relay_starts_high_and_pulses_low(factory):
    door = Door("main", DoorSection(relay_pin=22, relay_active_high=False, pulse_s=0.2), factory)
    pin = factory.pin(22)
    # states[0] is the mock pin before gpiozero claimed it (an input); from the moment it is an
    # output (output_with_state: function and level set together) it must only ever be HIGH.
    assert pin.state is True and all(s.state for s in pin.states[1:]), "active-low relay must idle HIGH"
    door.pulse()
    deadline = time.monotonic() + 5
    while not (len(pin.states) >= 3 and pin.state):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    low_for = [pin.states[i + 1].timestamp for i, s in enumerate(pin.states[:-1]) if i > 0 and not s.state]
    assert len(low_for) == 1 and 0.2 <= low_for[0] < 1.2
    door.close()


def test_pulse_has_configured_length_and_release_on_close(factory):
    door = Door("main", DoorSection(relay_pin=17, pulse_s=0.25), factory)
    pin = factory.pin(17)
    door.pulse()
    assert door.energised
    _wait_released(pin)
    (pulse,) = relay_pulses(pin)
    assert 0.25 <= pulse < 1.25
    door.pulse()
    door.close()  # shutdown in the middle of a pulse releases at once
    assert pin.state is False


def test_a_failing_pulse_leaves_the_relay_released(factory, monkeypatch):
    door = Door("main", DoorSection(relay_pin=17, pulse_s=0.25), factory)

    def broken(*a, **k):
        door.relay.on()
        raise RuntimeError("GPIO chip went away")

    monkeypatch.setattr(door.relay, "blink", broken)
    with pytest.raises(RuntimeError):
        door.pulse()
    assert factory.pin(17).state is False
    door.close()
