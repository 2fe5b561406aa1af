"""The relay through gpiozero's MockFactory: pin histories, not prints."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from bridge.config import DoorSection
from bridge.door.relay import Relay
from tests.support.harness import relay_pulses


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
    door = Relay("main", DoorSection(relay_pin=17, pulse_s=0.2), factory)
    pin = factory.pin(17)
    assert [s.state for s in pin.states] == [False]
    assert not door.energised
    door.close()


def test_active_low_relay_starts_high_and_pulses_low(factory):
    door = Relay("main", DoorSection(relay_pin=22, relay_active_high=False, pulse_s=0.2), factory)
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
    door = Relay("main", DoorSection(relay_pin=17, pulse_s=0.25), factory)
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
    door = Relay("main", DoorSection(relay_pin=17, pulse_s=0.25), factory)

    real_on = door.relay.on

    def broken(*a, **k):
        real_on()
        raise RuntimeError("GPIO chip went away")

    monkeypatch.setattr(door.relay, "on", broken)
    with pytest.raises(RuntimeError):
        door.pulse()
    assert factory.pin(17).state is False
    door.close()


def _count_thread_starts(monkeypatch) -> list[threading.Thread]:
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def counting_start(self):
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    return started


def test_pulses_start_and_join_no_thread(factory, monkeypatch):
    """The decision worker calls pulse() inside a batch: it must not start (or join) a thread per
    pulse, as gpiozero's blink() does. The pulse timing runs on one long-lived thread."""
    door = Relay("main", DoorSection(relay_pin=17, pulse_s=0.05), factory)
    pin = factory.pin(17)
    door.pulse()
    _wait_released(pin)
    started = _count_thread_starts(monkeypatch)
    for _ in range(20):
        door.pulse()
        time.sleep(0.07)
    deadline = time.monotonic() + 5
    while pin.state:
        assert time.monotonic() < deadline, "relay never released"
        time.sleep(0.01)
    assert started == [], f"pulse() started {len(started)} threads"
    assert len(relay_pulses(pin)) == 21 and all(0.05 <= p < 1.05 for p in relay_pulses(pin))
    door.close()


def test_a_new_pulse_restarts_the_timer_and_hold_outlives_a_pulse(factory):
    door = Relay("main", DoorSection(relay_pin=17, pulse_s=0.3), factory)
    pin = factory.pin(17)
    door.pulse()
    time.sleep(0.2)
    door.pulse()  # still open: the door stays released 0.3 s from now, in one pulse
    _wait_released(pin)
    (pulse,) = relay_pulses(pin)
    assert 0.5 <= pulse < 1.5
    door.pulse()
    door.hold()  # a mode holding the door open: the pulse's timer must not end the hold
    time.sleep(0.5)
    assert door.energised
    door.release_hold()
    assert pin.state is False
    door.close()
