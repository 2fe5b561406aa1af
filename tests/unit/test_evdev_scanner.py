"""Keyboard-wedge scanners: real `evdev.InputEvent` sequences through the real decoder and input.

The mocks here stand in for `evdev.InputDevice` because CI has no /dev/input and no /dev/uinput
to create a virtual keyboard: `FakeKeyboard` hands the real input class real `InputEvent`s and
then raises OSError(ENODEV) exactly as python-evdev does when the device is unplugged, and
`FakeNode` (with a patched `readable_event_nodes`) lets the device-selector search run. Expected characters come from hand-written tables below (what a person types on that
keyboard), not from `bridge.inputs.keymap`, so a wrong layout table fails these tests.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from pathlib import Path

import evdev
import pytest
import structlog
from evdev import InputEvent, ecodes
from evdev.device import DeviceInfo
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.inputs import evdev_scanner
from bridge.inputs.evdev_scanner import (
    KEYPAD_DEVICE_KEYS,
    UNKNOWN_KEY_CHAR,
    DeviceNotFound,
    DiscardedScan,
    EvdevScannerConfig,
    EvdevScannerInput,
    TypedScan,
    WedgeDecoder,
    create,
    find_device_path,
    list_key_devices,
)
from tests.support.fakes.keyboard import (
    FakeKeyboard,
    Plugging,
    Typist,
    run_until,
    unplugged,
    us_table,
)
from verifier.credentials import MAX_SCAN_BYTES, parse
from verifier.types import DigitalIdToken, Malformed, Source

# --- building real event streams ---------------------------------------------------------------


US = us_table()
US_RIGHT_SHIFT = us_table("KEY_RIGHTSHIFT")

# German QWERTZ as printed on the keycaps.
DE = {
    **{c: k for c, k in US.items() if c.isalnum()},
    "y": ("KEY_Z",), "Y": ("KEY_Z", "KEY_LEFTSHIFT"), "z": ("KEY_Y",), "Z": ("KEY_Y", "KEY_LEFTSHIFT"),
    ":": ("KEY_DOT", "KEY_LEFTSHIFT"), "/": ("KEY_7", "KEY_LEFTSHIFT"), ".": ("KEY_DOT",),
    "?": ("KEY_MINUS", "KEY_LEFTSHIFT"), "=": ("KEY_0", "KEY_LEFTSHIFT"), "&": ("KEY_6", "KEY_LEFTSHIFT"),
    "_": ("KEY_SLASH", "KEY_LEFTSHIFT"), "-": ("KEY_SLASH",), "~": ("KEY_RIGHTBRACE", "KEY_RIGHTALT"),
    "$": ("KEY_4", "KEY_LEFTSHIFT"), "%": ("KEY_5", "KEY_LEFTSHIFT"), "@": ("KEY_Q", "KEY_RIGHTALT"),
    "ß": ("KEY_MINUS",), "ü": ("KEY_LEFTBRACE",), " ": ("KEY_SPACE",),
}  # fmt: skip


def decode(events: Iterable[InputEvent], decoder: WedgeDecoder | None = None) -> list[TypedScan | DiscardedScan]:
    decoder = decoder or WedgeDecoder("us", inter_key_timeout_s=0.5)
    return [outcome for outcome in map(decoder.feed, events) if outcome is not None]


def texts(outcomes: Sequence[TypedScan | DiscardedScan]) -> list[str]:
    return [o.text for o in outcomes if isinstance(o, TypedScan)]


# --- the decoder -------------------------------------------------------------------------------

QR_URL = "https://x.example/verify.php?token=Ab_9-xyz"
JWT = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1XzEyMyIsImV4cCI6MTcwMDAwMDAwMH0.Zm9v_YmFy-YmF6"


def test_digital_id_qr_url_decodes_exactly_and_parses_as_its_token() -> None:
    [scan] = decode(Typist().type(QR_URL, US))
    assert scan == TypedScan(QR_URL)
    assert isinstance(parse(scan.text.encode()), DigitalIdToken)


def test_jwt_scan_decodes_exactly() -> None:
    assert texts(decode(Typist().type(JWT, US))) == [JWT]


def test_every_qr_punctuation_mark_case_and_digit_with_either_shift_key() -> None:
    text = "$:/?=&._-~%AbCdEfXyZ0123456789"
    assert texts(decode(Typist().type(text, US))) == [text]
    assert texts(decode(Typist().type(text, US_RIGHT_SHIFT))) == [text]


def test_keypad_enter_ends_a_scan_like_enter() -> None:
    typist = Typist()
    events = typist.type("abc", US, enter="KEY_KPENTER") + typist.type("def", US, enter="KEY_ENTER")
    assert texts(decode(events)) == ["abc", "def"]


def test_keypad_digit_keys_type_digits() -> None:
    typist = Typist()
    events = [e for d in "7305" for e in typist.tap(f"KEY_KP{d}")] + typist.tap("KEY_KPENTER")
    assert texts(decode(events)) == ["7305"]


def test_pause_longer_than_the_inter_key_timeout_discards_the_half_scan() -> None:
    typist = Typist()
    events = typist.type("half", US, enter="")
    typist.pause(2.0)
    events += typist.type("whole", US)
    outcomes = decode(events, WedgeDecoder("us", inter_key_timeout_s=0.5))
    assert outcomes == [DiscardedScan("inter_key_timeout", 4), TypedScan("whole")]


def test_pause_shorter_than_the_timeout_keeps_the_scan_together() -> None:
    typist = Typist()
    events = typist.type("ab", US, enter="")
    typist.pause(0.3)
    events += typist.type("cd", US)
    assert texts(decode(events, WedgeDecoder("us", inter_key_timeout_s=0.5))) == ["abcd"]


def test_half_scan_then_late_enter_emits_nothing() -> None:
    typist = Typist()
    events = typist.type("half", US, enter="")
    typist.pause(5.0)
    events += typist.tap("KEY_ENTER")
    assert decode(events) == [DiscardedScan("inter_key_timeout", 4)]


def test_enter_on_its_own_emits_nothing() -> None:
    typist = Typist()
    assert decode(typist.tap("KEY_ENTER") + typist.tap("KEY_KPENTER")) == []


def test_autorepeat_does_not_type_again() -> None:
    typist = Typist()
    events = typist.key("KEY_A", 1) + typist.key("KEY_A", 2) + typist.key("KEY_A", 2) + typist.key("KEY_A", 0)
    assert texts(decode(events + typist.tap("KEY_ENTER"))) == ["a"]


def test_dropped_events_discard_the_half_scan() -> None:
    typist = Typist()
    events = typist.type("ab", US, enter="")
    events.append(InputEvent(int(typist.t), 0, ecodes.EV_SYN, ecodes.SYN_DROPPED, 0))
    events += typist.type("cd", US)
    assert decode(events) == [DiscardedScan("events_dropped", 2), TypedScan("cd")]


def test_scan_over_the_cap_is_emitted_bounded_and_the_verifier_calls_it_malformed() -> None:
    typist = Typist()
    events = typist.type("a" * (MAX_SCAN_BYTES + 1000), US)
    [scan] = decode(events)
    assert isinstance(scan, TypedScan) and scan.too_long
    assert len(scan.text) == MAX_SCAN_BYTES + 1
    assert isinstance(parse(scan.text.encode()), Malformed)


def test_scan_exactly_at_the_cap_is_not_too_long() -> None:
    [scan] = decode(Typist().type("b" * MAX_SCAN_BYTES, US))
    assert isinstance(scan, TypedScan) and not scan.too_long and len(scan.text) == MAX_SCAN_BYTES


def test_unknown_key_is_counted_and_makes_the_scan_malformed_instead_of_vanishing() -> None:
    typist = Typist()
    events = typist.type("12345", US, enter="") + typist.tap("KEY_F5") + typist.type("678", US)
    decoder = WedgeDecoder()
    [scan] = decode(events, decoder)
    assert scan == TypedScan("12345" + UNKNOWN_KEY_CHAR + "678", unknown_keys=1)
    assert decoder.unknown_keys_total == 1
    assert isinstance(parse(scan.text.encode()), Malformed)


def test_ctrl_chord_is_not_text() -> None:
    typist = Typist()
    events = typist.tap("KEY_A") + typist.tap("KEY_J", "KEY_LEFTCTRL") + typist.tap("KEY_ENTER")
    [scan] = decode(events)
    assert isinstance(scan, TypedScan) and scan.text == "a" + UNKNOWN_KEY_CHAR and scan.unknown_keys == 1


def test_caps_lock_inverts_letters_but_not_digits_or_symbols() -> None:
    typist = Typist()
    events = typist.tap("KEY_CAPSLOCK") + typist.type("aB1/", US)
    assert texts(decode(events)) == ["Ab1/"]


def test_german_layout_types_qwertz_with_altgr() -> None:
    text = "https://zy.example/a?b=c_d-e~f&g$h%@ß"
    decoder = WedgeDecoder("de")
    assert texts(decode(Typist().type(text, DE), decoder)) == [text]


def test_german_dead_circumflex_then_space_is_a_caret() -> None:
    typist = Typist()
    events = typist.tap("KEY_A") + typist.tap("KEY_GRAVE") + typist.tap("KEY_SPACE") + typist.tap("KEY_B")
    assert texts(decode(events + typist.tap("KEY_ENTER"), WedgeDecoder("de"))) == ["a^b"]


def test_uk_layout_differs_from_us_where_the_keycaps_do() -> None:
    typist = Typist()
    events = typist.tap("KEY_2", "KEY_LEFTSHIFT") + typist.tap("KEY_APOSTROPHE", "KEY_LEFTSHIFT") + typist.tap("KEY_ENTER")
    assert texts(decode(events, WedgeDecoder("uk"))) == ['"@']
    assert texts(decode(events, WedgeDecoder("us"))) == ['@"']


# Realistic keys, weighted in, so sequences build scans as well as noise.
_key_codes = st.sampled_from(
    [ecodes.ecodes[n] for n in ("KEY_A", "KEY_1", "KEY_ENTER", "KEY_LEFTSHIFT", "KEY_RIGHTALT", "KEY_GRAVE", "KEY_CAPSLOCK", "KEY_LEFTCTRL", "KEY_SPACE")]
)
_events = st.builds(
    InputEvent,
    sec=st.integers(0, 2**31 - 1),
    usec=st.integers(0, 999_999),
    type=st.one_of(st.sampled_from([ecodes.EV_KEY, ecodes.EV_KEY, ecodes.EV_SYN, ecodes.EV_MSC]), st.integers(0, 0x1F)),
    code=st.one_of(_key_codes, st.integers(0, 0x2FF)),
    value=st.one_of(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_events, max_size=200), layout=st.sampled_from(["us", "uk", "de"]))
def test_arbitrary_event_sequences_never_raise_and_stay_bounded(events: list[InputEvent], layout: str) -> None:
    decoder = WedgeDecoder(layout, inter_key_timeout_s=0.5, max_bytes=32)
    for event in events:
        outcome = decoder.feed(event)
        assert outcome is None or isinstance(outcome, (TypedScan, DiscardedScan))
        if isinstance(outcome, TypedScan):
            assert outcome.text and len(outcome.text.encode()) <= 32 + 8


# --- config ------------------------------------------------------------------------------------


def test_config_defaults_and_unknown_layout_names_the_known_ones() -> None:
    cfg = EvdevScannerConfig(type="evdev", id="QR-1", device="0c2e:0b61")
    assert (cfg.door, cfg.layout, cfg.grab) == ("main", "us", True)
    with pytest.raises(ValidationError, match="known: de, uk, us"):
        EvdevScannerConfig(type="evdev", id="QR-1", device="/dev/input/event3", layout="fr")
    with pytest.raises(ValidationError):
        EvdevScannerConfig.model_validate(dict(type="evdev", id="QR-1", device="/dev/input/event3", grabb=False))


def test_create_builds_an_input_carrying_its_reader_id() -> None:
    scanner = create(EvdevScannerConfig(type="evdev", id="QR-1", device="/dev/input/event3"))
    assert scanner.reader_id == "QR-1"


# --- the input against a fake device (the one mock: see the module docstring) -----------------


def _cfg(**overrides: object) -> EvdevScannerConfig:
    fields: dict[str, object] = dict(type="evdev", id="QR-1", device="/dev/input/by-id/usb-Fake-event-kbd", reconnect_s=0.01)
    return EvdevScannerConfig.model_validate(fields | overrides)


def test_unplug_and_replug_scans_before_and_after_one_warning_per_outage() -> None:
    typist = Typist()
    first = FakeKeyboard(typist.type("before", US) + typist.type("half", US, enter=""), then=unplugged())
    second = FakeKeyboard(typist.type("after", US), then=unplugged(), path="/dev/input/event9")
    third = FakeKeyboard(typist.type("again", US))
    plugging = Plugging(first, FileNotFoundError(errno.ENOENT, "No such file"), unplugged(), second, third)
    with structlog.testing.capture_logs() as logs:
        scanner = EvdevScannerInput(_cfg(), open_device=plugging)
        scans = run_until(scanner, lambda scans: len(scans) == 3)

    assert [s.raw for s in scans] == [b"before", b"after", b"again"]  # "half" never joined "after"
    assert all(s.reader_id == "QR-1" and s.source is Source.PHONE_QR and s.hint is None for s in scans)
    assert scans[0].at_monotonic <= scans[1].at_monotonic <= scans[2].at_monotonic
    assert first.grabbed and second.grabbed and third.grabbed
    assert first.closed and second.closed and third.closed  # third closed on cancel
    assert plugging.opened == ["/dev/input/by-id/usb-Fake-event-kbd"] * 5
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [w["event"] for w in warnings] == ["evdev_device_lost", "evdev_device_lost"]
    assert all(w["errno"] == "ENODEV" and "door-bridge doctor" in w["hint"] for w in warnings)
    assert [e["event"] for e in logs if e["event"] == "evdev_device_reconnected"] == ["evdev_device_reconnected"] * 2
    assert not any("before" in str(e) or "after" in str(e) for e in logs)  # scan text never logged


def test_device_missing_at_start_warns_once_then_reads_when_it_appears() -> None:
    plugging = Plugging(DeviceNotFound("Fake"), DeviceNotFound("Fake"), DeviceNotFound("Fake"), FakeKeyboard(Typist().type("hello", US)))
    with structlog.testing.capture_logs() as logs:
        scans = run_until(EvdevScannerInput(_cfg(device="Fake"), open_device=plugging), lambda scans: len(scans) == 1)
    assert scans[0].raw == b"hello"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["evdev_device_unavailable"]
    assert "Fake" in next(e for e in logs if e["log_level"] == "warning")["error"]


def test_device_grabbed_by_another_program_is_retried_and_the_warning_says_so() -> None:
    busy = FakeKeyboard([])
    busy.grab_error = OSError(errno.EBUSY, "Device or resource busy")
    free = FakeKeyboard(Typist().type("ok", US))
    with structlog.testing.capture_logs() as logs:
        scans = run_until(EvdevScannerInput(_cfg(), open_device=Plugging(busy, free)), lambda scans: len(scans) == 1)
    assert scans[0].raw == b"ok" and busy.closed and free.grabbed
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["errno"] == "EBUSY" and "grabbed" in warning["hint"]


def test_grab_false_leaves_the_device_shared() -> None:
    device = FakeKeyboard(Typist().type("x", US))
    run_until(EvdevScannerInput(_cfg(grab=False), open_device=Plugging(device)), lambda scans: len(scans) == 1)
    assert not device.grabbed


def test_unknown_keys_and_overlong_scans_are_emitted_with_a_warning() -> None:
    typist = Typist()
    events = typist.tap("KEY_F1") + typist.type("x", US) + typist.type("y" * (MAX_SCAN_BYTES + 5), US)
    with structlog.testing.capture_logs() as logs:
        scanner = EvdevScannerInput(_cfg(), open_device=Plugging(FakeKeyboard(events)))
        scans = run_until(scanner, lambda scans: len(scans) == 2)
    assert scans[0].raw == (UNKNOWN_KEY_CHAR + "x").encode() and len(scans[1].raw) == MAX_SCAN_BYTES + 1
    warnings = {e["event"]: e for e in logs if e["log_level"] == "warning"}
    assert warnings["evdev_unknown_keys"]["count"] == 1 and warnings["evdev_unknown_keys"]["layout"] == "us"
    assert warnings["evdev_scan_too_long"]["limit"] == MAX_SCAN_BYTES


# --- picking the device by name or vendor:product (evdev's device listing faked: no /dev/input) -


class FakeNode:
    """A second stand-in, for `evdev.InputDevice` as opened by the selector search."""

    nodes: dict[str, tuple[str, int, int, list[int]]] = {}
    opened: list[str] = []

    def __init__(self, path: str) -> None:
        if path not in self.nodes:
            raise PermissionError(errno.EACCES, "Permission denied")
        self.path = path
        self.name, vendor, product, self.keys = self.nodes[path]
        self.info = DeviceInfo(3, vendor, product, 0x110)
        FakeNode.opened.append(path)

    def capabilities(self) -> dict[int, list[int]]:
        return {ecodes.EV_KEY: self.keys} if self.keys else {}

    def close(self) -> None:
        FakeNode.opened.remove(self.path)


@pytest.fixture
def input_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    keyboard = [ecodes.KEY_A, ecodes.KEY_ENTER]
    FakeNode.nodes = {
        "/dev/input/event2": ("Power Button", 0, 1, [ecodes.KEY_POWER]),
        "/dev/input/event10": ("Honeywell 2D Scanner", 0x0C2E, 0x0B61, keyboard),
        "/dev/input/event9": ("Honeywell 2D Scanner", 0x0C2E, 0x0B61, [ecodes.KEY_VOLUMEUP]),  # consumer control
        "/dev/input/event11": ("USB Keypad", 0x1C4F, 0x0002, [ecodes.KEY_KP0, ecodes.KEY_KPENTER]),
    }
    FakeNode.opened = []
    paths = [*FakeNode.nodes, "/dev/input/event3"]  # event3: not readable by us
    monkeypatch.setattr(evdev_scanner, "readable_event_nodes", lambda: list(paths))
    monkeypatch.setattr(evdev, "InputDevice", FakeNode)


@pytest.mark.usefixtures("input_nodes")
def test_selector_by_vendor_product_picks_the_node_that_types_enter() -> None:
    assert find_device_path("0c2e:0B61") == "/dev/input/event10"
    assert FakeNode.opened == []  # every probed node closed again


@pytest.mark.usefixtures("input_nodes")
def test_selector_by_name_and_keypad_needs() -> None:
    assert find_device_path("Honeywell 2D Scanner") == "/dev/input/event10"
    assert find_device_path("USB Keypad", needs_any=KEYPAD_DEVICE_KEYS) == "/dev/input/event11"
    with pytest.raises(DeviceNotFound, match="'Power Button'"):
        find_device_path("Power Button")  # no Enter: not a scanner


def test_selector_that_is_a_path_is_used_as_is() -> None:
    assert find_device_path("/dev/input/by-id/usb-Honeywell-event-kbd") == "/dev/input/by-id/usb-Honeywell-event-kbd"


@pytest.mark.usefixtures("input_nodes")
def test_listing_for_doctor_shows_every_readable_key_device_in_event_order() -> None:
    found = list_key_devices()
    assert [(d.path, d.vendor_product, d.types_enter, d.has_digits) for d in found] == [
        ("/dev/input/event2", "0000:0001", False, False),
        ("/dev/input/event9", "0c2e:0b61", False, False),
        ("/dev/input/event10", "0c2e:0b61", True, False),
        ("/dev/input/event11", "1c4f:0002", True, True),
    ]
    assert FakeNode.opened == []


def test_device_search_works_with_the_python3_evdev_debian_and_raspberry_pi_os_ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian 12 and Raspberry Pi OS ship python3-evdev 1.6.1, whose list_devices() takes no
    `writable=`; install.sh's venv keeps it (--system-site-packages). With evdev 2.0's call every
    search raised TypeError and the reader died. (The guest suite runs the real 1.6.1.)"""

    def list_devices_1_6_1(input_device_dir: str = "/dev/input") -> list[str]:  # evdev 1.6.1's signature
        return [str(p) for p in Path(input_device_dir).glob("event*")]

    for name in ("event2", "event10", "event9", "mouse0"):
        (tmp_path / name).touch()
    FakeNode.nodes = {
        f"{tmp_path}/event2": ("Power Button", 0, 1, [ecodes.KEY_POWER]),
        f"{tmp_path}/event10": ("Honeywell 2D Scanner", 0x0C2E, 0x0B61, [ecodes.KEY_A, ecodes.KEY_ENTER]),
        f"{tmp_path}/event9": ("Honeywell 2D Scanner", 0x0C2E, 0x0B61, [ecodes.KEY_VOLUMEUP]),
    }
    FakeNode.opened = []
    monkeypatch.setattr(evdev, "list_devices", list_devices_1_6_1)
    monkeypatch.setattr(evdev, "InputDevice", FakeNode)
    monkeypatch.setattr(evdev_scanner, "INPUT_DIR", str(tmp_path), raising=False)
    assert find_device_path("0c2e:0b61") == f"{tmp_path}/event10"
    assert [d.path for d in list_key_devices()] == [f"{tmp_path}/event2", f"{tmp_path}/event9", f"{tmp_path}/event10"]
    assert FakeNode.opened == []
