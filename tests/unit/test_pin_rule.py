"""The PIN length rule has one copy (verifier.credentials) and every part that bounds a PIN uses it."""

from __future__ import annotations

from bridge.config.readers import KeypadConfig, OsdpReaderConfig
from bridge.inputs.keypad import KeypadBuffer
from verifier.credentials import PIN_MAX_DIGITS, PIN_MIN_DIGITS, is_pin, parse
from verifier.passcode import PASSCODE_LENGTH
from verifier.types import Malformed, Pin


def test_the_parser_takes_exactly_the_rule() -> None:
    assert (PIN_MIN_DIGITS, PIN_MAX_DIGITS) == (4, 12)
    for digits in (PIN_MIN_DIGITS, PIN_MAX_DIGITS):
        assert isinstance(parse(b"7" * digits, hint="pin"), Pin) and is_pin("7" * digits)
    for digits in (PIN_MIN_DIGITS - 1, PIN_MAX_DIGITS + 1):
        assert isinstance(parse(b"7" * digits, hint="pin"), Malformed) and not is_pin("7" * digits)
    assert not is_pin("١٢٣٤")  # Arabic-Indic digits: str.isdigit() says yes, no keypad sends them


def test_every_bound_on_a_pin_is_the_rule() -> None:
    assert PASSCODE_LENGTH == PIN_MAX_DIGITS
    assert KeypadBuffer().max_length == PIN_MAX_DIGITS
    assert KeypadConfig.model_fields["max_length"].default == PIN_MAX_DIGITS
    assert OsdpReaderConfig.model_fields["max_pin_length"].default == PIN_MAX_DIGITS
    buffer = KeypadBuffer()
    assert [buffer.feed(k, at=0.0) for k in "7" * (PIN_MAX_DIGITS + 1) + "#"][-1] is None
