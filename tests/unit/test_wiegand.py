"""Wiegand: pure frame decoding, and the GPIO input driven by real pulse trains on mock pins.

The hardware tests pull gpiozero `MockFactory` pins low and high the way a reader does (a short
low pulse per bit, ~1.5 ms apart) and read the scans the input emits; nothing inside the input
is mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import structlog
from gpiozero import DigitalInputDevice
from gpiozero.exc import GPIOPinInUse
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.inputs.base import InputContext, Scan
from bridge.inputs.wiegand import FrameAssembler, WiegandReaderConfig, create
from tests.support.harness import SetMonotonic
from tests.support.wiegand_wire import (
    Train,
    factory,  # noqa: F401  (the MockFactory fixture)
    send,
)
from verifier.types import Source
from verifier.wiegand_formats import (
    FORMATS,
    FormatName,
    WiegandCard,
    WiegandError,
    WiegandKey,
    card_key,
    decode,
    encode,
    encode_key,
)


def bits_of(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.replace(" ", ""))


# --- pure decoding ----------------------------------------------------------------------------

# Written out by hand from the H10301 definition, independent of `encode`:
# P(even over 1-12) | facility 123 = 01111011 | card 4567 = 0001000111010111 | P(odd over 13-24)
H10301_123_4567 = bits_of("1 01111011 0001000111010111 0")


def test_h10301_frame_decodes_to_facility_and_card() -> None:
    card = decode(H10301_123_4567)
    assert card == WiegandCard("H10301", 4567, 123)
    assert card_key(card) == "123:4567"


def test_encode_agrees_with_the_hand_written_frame() -> None:
    assert encode("H10301", 4567, 123) == H10301_123_4567


@pytest.mark.parametrize(
    ("fmt", "facility", "number", "key"),
    [
        ("H10301", 0, 0, "0:0"),
        ("H10301", 255, 65535, "255:65535"),
        ("H10306", 65535, 65535, "65535:65535"),
        ("H10306", 1, 2, "1:2"),
        ("H10304", 65535, 524287, "65535:524287"),
        ("H10304", 42, 300000, "42:300000"),
        ("H10302", None, 5, "00000000005"),
        ("H10302", None, 2**35 - 1, "34359738367"),
    ],
)
def test_each_format_round_trips_to_its_card_key(fmt: FormatName, facility: int | None, number: int, key: str) -> None:
    frame = encode(fmt, number, facility)
    assert len(frame) == FORMATS[fmt].length
    card = decode(frame, formats=[fmt])
    assert card == WiegandCard(fmt, number, facility)
    assert isinstance(card, WiegandCard) and card_key(card) == key


def test_card_key_is_what_the_credential_parser_makes_of_it() -> None:
    """The grant cache stores `normalise_card(number)`; a Wiegand scan must land on the same string."""
    credentials = pytest.importorskip("verifier.credentials")
    cases: list[tuple[FormatName, int | None, int]] = [("H10301", 123, 4567), ("H10304", 7, 9), ("H10302", None, 5)]
    for fmt, facility, number in cases:
        card = decode(encode(fmt, number, facility), formats=[fmt])
        assert isinstance(card, WiegandCard)
        key = card_key(card)
        assert credentials.parse(key.encode(), hint="card").number == key


@pytest.mark.parametrize("fmt", ["H10301", "H10306", "H10304", "H10302"])
def test_every_single_bit_error_is_refused_naming_format_and_parity(fmt: FormatName) -> None:
    good = encode(fmt, 12345, 77 if FORMATS[fmt].facility else None)
    leading, trailing = FORMATS[fmt].parity
    for i in range(len(good)):
        bad = list(good)
        bad[i] ^= 1
        result = decode(tuple(bad), formats=[fmt])
        assert isinstance(result, WiegandError), f"bit {i} flipped was accepted"
        assert result.format == fmt
        expected = leading if i in leading.covers else trailing
        assert result.parity == expected.name
        assert fmt in result.reason and expected.name in result.reason


def test_37_bits_decode_as_the_format_the_site_configured() -> None:
    frame = encode("H10304", 5, 1)
    assert decode(frame) == WiegandCard("H10304", 5, 1)
    # The same bits read as H10302 are facility and card run together: 1 << 19 | 5.
    assert decode(frame, formats=["H10302"]) == WiegandCard("H10302", (1 << 19) | 5)


def test_two_formats_of_one_length_are_refused() -> None:
    with pytest.raises(ValueError, match="H10304 and H10302 are both 37 bits"):
        decode(encode("H10304", 5, 1), formats=["H10304", "H10302"])


@pytest.mark.parametrize("symbol", list("0123456789*#"))
def test_keypad_bursts_of_4_and_8_bits_give_the_key(symbol: str) -> None:
    assert decode(encode_key(symbol, 4)) == WiegandKey(symbol)
    assert decode(encode_key(symbol, 8)) == WiegandKey(symbol)


def test_8_bit_key_is_the_complement_nibble_then_the_key() -> None:
    assert encode_key("1", 8) == bits_of("1110 0001")
    assert decode(bits_of("1110 0001")) == WiegandKey("1")
    assert decode(bits_of("0100 1011")) == WiegandKey("#")


@pytest.mark.parametrize("frame", ["1111 0001", "0000 0000", "1100"])
def test_bad_keypad_bursts_are_errors(frame: str) -> None:
    # a bit lost from the complement; all zeros; 4-bit value 12 is no key
    assert isinstance(decode(bits_of(frame)), WiegandError)


@pytest.mark.parametrize("length", [0, 1, 3, 25, 27, 35, 36, 64])
def test_unknown_lengths_are_errors(length: int) -> None:
    result = decode((0,) * length)
    assert isinstance(result, WiegandError)
    assert result.length == length


def test_error_and_card_reprs_do_not_show_numbers() -> None:
    card = decode(H10301_123_4567)
    assert "4567" not in repr(card) and "123" not in repr(card)
    assert "7" not in repr(WiegandKey("7")).replace("WiegandKey", "")


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(st.integers(0, 1), st.integers(-3, 5), st.booleans()), max_size=80).map(tuple),
    st.sets(st.sampled_from(["H10301", "H10306", "H10304"])),
)
def test_decode_never_raises_on_any_tuple(bits: tuple[int, ...], formats: set[FormatName]) -> None:
    result = decode(bits, formats=sorted(formats))
    assert isinstance(result, (WiegandCard, WiegandKey, WiegandError))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["H10301", "H10306", "H10304", "H10302"]), st.data())
def test_any_valid_card_round_trips(fmt: FormatName, data: st.DataObject) -> None:
    spec = FORMATS[fmt]
    number = data.draw(st.integers(0, (1 << len(spec.card)) - 1))
    facility = data.draw(st.integers(0, (1 << len(spec.facility)) - 1)) if spec.facility else None
    assert decode(encode(fmt, number, facility), formats=[fmt]) == WiegandCard(fmt, number, facility)


# --- frame and PIN assembly with an explicit clock --------------------------------------------


def test_frames_are_cut_on_the_gap_between_bit_timestamps() -> None:
    clock = SetMonotonic(100.0)
    frames = FrameAssembler(gap_s=0.025, clock=clock)
    for b in (1, 0, 1):
        frames.bit(b)
        clock.now += 0.002
    assert frames.take(clock.now) == []  # still inside the gap: the frame may go on
    clock.now += 0.030
    frames.bit(0)  # a new frame starts; the old one is closed by the gap, not by take()
    assert frames.seconds_to_frame_end(clock.now) == pytest.approx(0.025)
    clock.now += 0.025
    assert [f[:2] for f in frames.take(clock.now)] == [((1, 0, 1), 3), ((0,), 1)]
    assert frames.seconds_to_frame_end(clock.now) is None


def test_a_stuck_line_is_counted_not_stored() -> None:
    clock = SetMonotonic(100.0)
    frames = FrameAssembler(gap_s=0.025, clock=clock)
    for _ in range(10_000):
        frames.bit(1)
        clock.now += 0.001
    clock.now += 1
    [(bits, length, _)] = frames.take(clock.now)
    assert len(bits) == 64 and length == 10_000


# --- config -----------------------------------------------------------------------------------


def reader_config(**overrides: object) -> WiegandReaderConfig:
    data: dict[str, object] = {"type": "wiegand", "id": "W-1", "d0_pin": 5, "d1_pin": 6, "frame_gap_ms": 250}
    data.update(overrides)
    return WiegandReaderConfig.model_validate(data)


def test_config_defaults_and_toml_integers() -> None:
    cfg = WiegandReaderConfig.model_validate({"type": "wiegand", "id": "W-1", "d0_pin": 5, "d1_pin": 6, "frame_gap_ms": 30})
    assert cfg.frame_gap_ms == 30.0 and cfg.door == "main" and cfg.keypad is False
    assert cfg.formats == ["H10301", "H10306", "H10304"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d1_pin": 5}, "must be different"),
        ({"formats": ["H10302", "H10304"]}, "both 37 bits"),
        ({"formats": ["H99999"]}, "H10301"),
        ({"frame_gap_ms": 1}, "greater than or equal to 5"),
        ({"d0_pin": 99}, "less than or equal to 53"),
        ({"pin_timeout": 5}, "Extra inputs"),
    ],
)
def test_config_mistakes_are_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        reader_config(**overrides)


# --- the input on mock GPIO pins --------------------------------------------------------------


async def scans_from(factory: MockFactory, cfg: WiegandReaderConfig, frames: Sequence[Train], expect: int) -> list[Scan]:
    """Run the input, pulse `frames` into it from a thread, and collect `expect` scans."""
    reader = create(cfg, InputContext(pin_factory=factory))
    queue: asyncio.Queue[Scan] = asyncio.Queue()
    task = asyncio.create_task(reader.run(queue.put_nowait))
    try:
        await asyncio.to_thread(send, factory, cfg, *frames)
        return [await asyncio.wait_for(queue.get(), timeout=10) for _ in range(expect)] + _drain(queue)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _drain(queue: asyncio.Queue[Scan]) -> list[Scan]:
    extra = []
    while not queue.empty():
        extra.append(queue.get_nowait())
    return extra


def test_lines_idle_high_through_the_pull_up(factory: MockFactory) -> None:
    cfg = reader_config()
    reader = create(cfg, InputContext(pin_factory=factory))
    try:
        assert factory.pin(5).state == 1 and factory.pin(6).state == 1
        assert factory.pin(5).pull == "up" and factory.pin(6).pull == "up"
    finally:
        reader.close()


def test_card_pulse_train_becomes_a_card_scan(factory: MockFactory) -> None:
    cfg = reader_config()
    with structlog.testing.capture_logs() as logs:
        scans = asyncio.run(scans_from(factory, cfg, [H10301_123_4567], expect=1))
    assert scans == [Scan("W-1", Source.CARD, b"123:4567", hint="card", at_monotonic=scans[0].at_monotonic)]
    assert scans[0].at_monotonic > 0
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert "4567" not in repr(logs)


def test_back_to_back_cards_of_different_formats_are_separate_scans(factory: MockFactory) -> None:
    cfg = reader_config()
    frames = [encode("H10306", 65000, 300), H10301_123_4567, encode("H10304", 400000, 9)]
    scans = asyncio.run(scans_from(factory, cfg, frames, expect=3))
    assert [s.raw for s in scans] == [b"300:65000", b"123:4567", b"9:400000"]


def test_bad_parity_frame_is_logged_and_not_scanned(factory: MockFactory) -> None:
    cfg = reader_config()
    bad = list(H10301_123_4567)
    bad[20] ^= 1  # a bit in the trailing half: the odd parity check fails
    with structlog.testing.capture_logs() as logs:
        # The good card after the bad frame proves the bad one was handled (frames go in order).
        scans = asyncio.run(scans_from(factory, cfg, [tuple(bad), encode("H10301", 1, 2)], expect=1))
    assert [s.raw for s in scans] == [b"2:1"]
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "wiegand_frame_rejected"
    assert warning["format"] == "H10301" and warning["parity"] == "odd (trailing)" and warning["bits"] == 26
    assert warning["reader"] == "W-1"
    assert "4567" not in repr(logs)


def test_line_noise_is_logged_and_not_scanned(factory: MockFactory) -> None:
    cfg = reader_config()
    with structlog.testing.capture_logs() as logs:
        scans = asyncio.run(scans_from(factory, cfg, [(1, 0, 1), H10301_123_4567], expect=1))
    assert [s.raw for s in scans] == [b"123:4567"]
    assert [(e["event"], e["bits"]) for e in logs if e["log_level"] == "warning"] == [("wiegand_frame_rejected", 3)]


def test_keypad_bursts_become_a_pin_on_hash(factory: MockFactory) -> None:
    cfg = reader_config(keypad=True)
    keys = [encode_key(k, 8) for k in "9*2580"] + [encode_key("#", 4)]
    with structlog.testing.capture_logs() as logs:
        scans = asyncio.run(scans_from(factory, cfg, keys, expect=1))
    assert len(scans) == 1
    assert (scans[0].source, scans[0].raw, scans[0].hint) == (Source.KEYPAD, b"2580", "pin")
    assert "2580" not in repr(logs)


def test_a_pause_forgets_a_half_typed_pin(factory: MockFactory) -> None:
    cfg = reader_config(keypad=True, pin_timeout_s=0.5)
    keys: list[Train] = [encode_key("1", 8), encode_key("2", 8), 0.8]
    keys += [encode_key(k, 8) for k in "3456#"]
    scans = asyncio.run(scans_from(factory, cfg, keys, expect=1))
    assert [s.raw for s in scans] == [b"3456"]


def test_a_pin_entry_dropped_by_a_pause_says_so_without_its_digits(factory: MockFactory) -> None:
    """The same lines as a USB or OSDP keypad: a technician sees why a half-typed PIN was lost."""
    cfg = reader_config(keypad=True, pin_timeout_s=0.5)
    keys: list[Train] = [encode_key("1", 8), encode_key("2", 8), 0.8]
    keys += [encode_key(k, 8) for k in "3456#"]
    with structlog.testing.capture_logs() as logs:
        asyncio.run(scans_from(factory, cfg, keys, expect=1))
    timed_out = [e for e in logs if e["event"] == "wiegand_pin_timed_out"]
    assert len(timed_out) == 1 and timed_out[0]["log_level"] == "info" and timed_out[0]["timeout_s"] == 0.5
    assert not any(str(v) in ("12", "3456") or "3456" in str(v) for e in logs for k, v in e.items() if k != "event")


def test_an_overlong_entry_is_refused_whole(factory: MockFactory) -> None:
    cfg = reader_config(keypad=True)
    keys = [encode_key(k, 4) for k in "1234567890123#" + "4321#"]
    with structlog.testing.capture_logs() as logs:
        scans = asyncio.run(scans_from(factory, cfg, keys, expect=1))
    assert [s.raw for s in scans] == [b"4321"]  # not b"123456789012"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["wiegand_pin_too_long"]


def test_card_and_pin_on_one_combo_reader(factory: MockFactory) -> None:
    cfg = reader_config(keypad=True)
    frames = [encode_key("4", 4), H10301_123_4567, encode_key("2", 4), encode_key("#", 4)]
    scans = asyncio.run(scans_from(factory, cfg, frames, expect=2))
    assert [(s.source, s.raw) for s in scans] == [(Source.CARD, b"123:4567"), (Source.KEYPAD, b"42")]


def test_keys_on_a_reader_without_keypad_are_dropped_with_a_warning(factory: MockFactory) -> None:
    cfg = reader_config(keypad=False)
    with structlog.testing.capture_logs() as logs:
        scans = asyncio.run(scans_from(factory, cfg, [encode_key("1", 8), encode_key("#", 8), H10301_123_4567], expect=1))
    assert [s.source for s in scans] == [Source.CARD]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["wiegand_key_ignored"] * 2


def test_cancelling_run_releases_both_lines(factory: MockFactory) -> None:
    cfg = reader_config()
    asyncio.run(scans_from(factory, cfg, [H10301_123_4567], expect=1))
    # Released lines can be claimed again (GPIOPinInUse otherwise).
    for pin in (cfg.d0_pin, cfg.d1_pin):
        DigitalInputDevice(pin, pin_factory=factory).close()


def test_a_line_already_in_use_fails_at_start_up(factory: MockFactory) -> None:
    cfg = reader_config()
    holder = DigitalInputDevice(cfg.d1_pin, pin_factory=factory)
    try:
        with pytest.raises(GPIOPinInUse):
            create(cfg, InputContext(pin_factory=factory))
        DigitalInputDevice(cfg.d0_pin, pin_factory=factory).close()  # d0 was given back
    finally:
        holder.close()
