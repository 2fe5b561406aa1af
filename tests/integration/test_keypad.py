"""PIN keypads: the pure `KeypadBuffer`, and `KeypadInput` fed real `evdev.InputEvent`s.

As for the wedge scanners, the one mock is the fake evdev device (`FakeKeyboard`, shared from
test_evdev_scanner): CI has no /dev/input or /dev/uinput.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.inputs.keypad import KeypadBuffer, KeypadConfig, KeypadInput, create
from tests.support.fakes.keyboard import (
    FakeKeyboard,
    Plugging,
    Typist,
    run_until,
    unplugged,
)
from verifier.credentials import parse
from verifier.types import Pin, Source

# --- KeypadBuffer ------------------------------------------------------------------------------


def feed_all(buffer: KeypadBuffer, keys: str, start: float = 100.0, step: float = 0.5) -> list[str]:
    pins = []
    for i, key in enumerate(keys):
        pin = buffer.feed(key, at=start + i * step)
        if pin is not None:
            pins.append(pin)
    return pins


def test_digits_then_pound_submit_a_pin() -> None:
    assert feed_all(KeypadBuffer(), "1234#") == ["1234"]


def test_star_clears_the_entry() -> None:
    assert feed_all(KeypadBuffer(), "99*4321#") == ["4321"]


def test_pound_with_nothing_typed_submits_nothing() -> None:
    assert feed_all(KeypadBuffer(), "#*#") == []


def test_each_submit_starts_a_fresh_entry() -> None:
    assert feed_all(KeypadBuffer(), "1111#2222#") == ["1111", "2222"]


def test_pause_longer_than_the_entry_timeout_clears_stale_digits() -> None:
    buffer = KeypadBuffer(entry_timeout_s=10.0)
    assert feed_all(buffer, "12", start=0.0) == []
    assert feed_all(buffer, "5678#", start=30.0) == ["5678"]
    assert buffer.timed_out == 1


def test_pause_within_the_entry_timeout_keeps_the_digits() -> None:
    buffer = KeypadBuffer(entry_timeout_s=10.0)
    feed_all(buffer, "12", start=0.0)
    assert feed_all(buffer, "34#", start=9.0) == ["1234"]
    assert buffer.timed_out == 0


def test_timeout_uses_the_injected_clock_when_no_time_is_given() -> None:
    now = [0.0]
    buffer = KeypadBuffer(entry_timeout_s=5.0, clock=lambda: now[0])
    buffer.feed("1")
    now[0] = 6.0
    for key in "234":
        buffer.feed(key)
    assert buffer.feed("#") == "234"


def test_entry_longer_than_max_length_is_refused_whole_not_cut_to_a_prefix() -> None:
    buffer = KeypadBuffer(max_length=6)
    assert feed_all(buffer, "1234567#") == []
    assert buffer.too_long == 1
    assert feed_all(buffer, "123456#") == ["123456"]


def test_unknown_symbols_are_counted_and_ignored() -> None:
    buffer = KeypadBuffer()
    assert feed_all(buffer, "12A3\x004#") == ["1234"]
    assert buffer.ignored == 2


@given(keys=st.lists(st.one_of(st.sampled_from(list("0123456789#*")), st.text(max_size=3)), max_size=100))
def test_any_key_sequence_yields_only_digit_strings_within_max_length(keys: list[str]) -> None:
    buffer = KeypadBuffer(max_length=8)
    for i, key in enumerate(keys):
        pin = buffer.feed(key, at=float(i))
        assert pin is None or (pin.isdigit() and pin.isascii() and 1 <= len(pin) <= 8)


def test_keypad_buffer_imports_without_evdev() -> None:
    # The Wiegand keypad decoder reuses KeypadBuffer on machines where evdev may be absent.
    code = "import sys; sys.modules['evdev'] = None\nimport bridge.inputs.keypad as k\nassert k.KeypadBuffer().feed('#') is None"
    env = os.environ | {"PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# --- config ------------------------------------------------------------------------------------


def test_config_defaults_and_limits() -> None:
    cfg = KeypadConfig(type="keypad", id="PIN-1", device="/dev/input/by-id/usb-Keypad-event-kbd")
    assert (cfg.max_length, cfg.entry_timeout_s, cfg.grab, cfg.door) == (12, 10.0, True, "main")
    with pytest.raises(ValidationError):
        KeypadConfig(type="keypad", id="PIN-1", device="x", max_length=0)
    with pytest.raises(ValidationError):
        KeypadConfig(type="keypad", id="PIN-1", device="x", entry_timeout_s=0)


def test_create_builds_an_input_carrying_its_reader_id() -> None:
    assert create(KeypadConfig(type="keypad", id="PIN-1", device="1234:5678")).reader_id == "PIN-1"


# --- KeypadInput on a (fake) evdev keypad ------------------------------------------------------


def _cfg(**overrides: object) -> KeypadConfig:
    fields: dict[str, object] = dict(type="keypad", id="PIN-1", device="USB Keypad", reconnect_s=0.01)
    return KeypadConfig.model_validate(fields | overrides)


def taps(typist: Typist, *names: str) -> list:
    return [event for name in names for event in typist.tap(name)]


def test_usb_keypad_pin_submitted_with_keypad_enter() -> None:
    events = taps(Typist(), "KEY_KP1", "KEY_KP2", "KEY_KP3", "KEY_KP4", "KEY_KPENTER")
    with structlog.testing.capture_logs() as logs:
        scans = run_until(KeypadInput(_cfg(), open_device=Plugging(FakeKeyboard(events))), lambda s: len(s) == 1)
    [scan] = scans
    assert (scan.reader_id, scan.source, scan.raw, scan.hint) == ("PIN-1", Source.KEYPAD, b"1234", "pin")
    assert isinstance(parse(scan.raw, hint=scan.hint), Pin)
    assert not any("1234" in str(event) for event in logs)  # the PIN is never logged


def test_matrix_keypad_star_clears_and_pound_submits() -> None:
    typist = Typist()
    events = taps(typist, "KEY_NUMERIC_9", "KEY_NUMERIC_9", "KEY_NUMERIC_STAR")
    events += taps(typist, "KEY_NUMERIC_2", "KEY_NUMERIC_4", "KEY_NUMERIC_6", "KEY_NUMERIC_8", "KEY_NUMERIC_POUND")
    scans = run_until(KeypadInput(_cfg(), open_device=Plugging(FakeKeyboard(events))), lambda s: len(s) == 1)
    assert scans[0].raw == b"2468"


def test_top_row_digits_with_shift_3_submitting_and_kp_asterisk_clearing() -> None:
    typist = Typist()
    events = taps(typist, "KEY_5", "KEY_KPASTERISK", "KEY_1", "KEY_9", "KEY_8", "KEY_0")
    events += typist.tap("KEY_3", "KEY_LEFTSHIFT")
    scans = run_until(KeypadInput(_cfg(), open_device=Plugging(FakeKeyboard(events))), lambda s: len(s) == 1)
    assert scans[0].raw == b"1980"


def test_entry_timeout_on_event_timestamps_clears_and_is_logged() -> None:
    typist = Typist()
    events = taps(typist, "KEY_KP7", "KEY_KP7")
    typist.pause(60.0)
    events += taps(typist, "KEY_KP4", "KEY_KP3", "KEY_KP2", "KEY_KP1", "KEY_KPENTER")
    with structlog.testing.capture_logs() as logs:
        scans = run_until(KeypadInput(_cfg(entry_timeout_s=10.0), open_device=Plugging(FakeKeyboard(events))), lambda s: len(s) == 1)
    assert scans[0].raw == b"4321"
    assert [e["event"] for e in logs if e["event"].startswith("keypad_entry_timed")] == ["keypad_entry_timed_out"]


def test_held_key_autorepeat_is_one_digit() -> None:
    typist = Typist()
    events = typist.key("KEY_KP5", 1) + typist.key("KEY_KP5", 2) + typist.key("KEY_KP5", 2) + typist.key("KEY_KP5", 0)
    events += taps(typist, "KEY_KP6", "KEY_KP7", "KEY_KP8", "KEY_KPENTER")
    scans = run_until(KeypadInput(_cfg(), open_device=Plugging(FakeKeyboard(events))), lambda s: len(s) == 1)
    assert scans[0].raw == b"5678"


def test_overlong_entry_is_not_submitted_and_warns() -> None:
    typist = Typist()
    events = taps(typist, *["KEY_KP1"] * 5, "KEY_KPENTER", "KEY_KP2", "KEY_KP2", "KEY_KP2", "KEY_KP2", "KEY_KPENTER")
    with structlog.testing.capture_logs() as logs:
        scans = run_until(KeypadInput(_cfg(max_length=4), open_device=Plugging(FakeKeyboard(events))), lambda s: len(s) == 1)
    assert scans[0].raw == b"2222"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["keypad_entry_too_long"]


def test_unplug_mid_entry_drops_the_half_pin_and_reads_after_replug() -> None:
    typist = Typist()
    first = FakeKeyboard(taps(typist, "KEY_KP1", "KEY_KP1"), then=unplugged())
    second = FakeKeyboard(taps(typist, "KEY_KP2", "KEY_KP3", "KEY_KP4", "KEY_KP5", "KEY_KPENTER"))
    with structlog.testing.capture_logs() as logs:
        scans = run_until(KeypadInput(_cfg(), open_device=Plugging(first, unplugged(), second)), lambda s: len(s) == 1)
    assert scans[0].raw == b"2345"
    assert first.grabbed and second.grabbed and first.closed
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["evdev_device_lost"]
