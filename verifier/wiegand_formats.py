"""Wiegand bit frames → a card number or a keypad key, with every parity bit checked.

Pure: a frame is the tuple of bits in the order the reader sent them (index 0 first, which is
the most significant bit of the frame). Formats are data (`FORMATS`), so adding one is adding
a table row, not code.

A bad frame is a `WiegandError` value, never an exception: line noise is normal on a long
unshielded Wiegand cable and must not take the input down.

Canonical card string (`card_key`), chosen to equal what `verifier.credentials.normalise_card`
makes of a card number typed into the central, so the grant cache stores one spelling:

* formats with a facility code: ``"<facility>:<card>"`` in decimal, no leading zeros
  (H10301 facility 123 card 4567 → ``"123:4567"``);
* formats without one (H10302): the card number in decimal, zero-padded to the width of the
  largest number the format can carry (11 digits: 35 bits), so short numbers still read as a
  card number rather than a PIN (``5`` → ``"00000000005"``).

Two frames of the same length cannot always be told apart by their bits: H10304 and H10302 are
both 37 bits with the same parity layout. A reader therefore decodes with the formats its site
uses (`decode(bits, formats=...)`), one per length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

FormatName = Literal["H10301", "H10306", "H10304", "H10302"]


@dataclass(frozen=True, slots=True)
class ParityCheck:
    """One parity bit and the bits it covers (positions in the frame, the parity bit included)."""

    name: str  # what a technician reads in the log: "even (leading)" / "odd (trailing)"
    covers: range
    even: bool

    def holds(self, bits: tuple[int, ...]) -> bool:
        ones = sum(bits[i] for i in self.covers)
        return ones % 2 == (0 if self.even else 1)


@dataclass(frozen=True, slots=True)
class WiegandFormat:
    name: FormatName
    description: str
    length: int
    parity: tuple[ParityCheck, ...]
    card: range  # bit positions of the card number, most significant first
    facility: range | None = None

    @property
    def card_digits(self) -> int:
        return len(str((1 << len(self.card)) - 1))


def _leading_even(last: int) -> ParityCheck:
    return ParityCheck("even (leading)", range(last + 1), even=True)


def _trailing_odd(first: int, length: int) -> ParityCheck:
    return ParityCheck("odd (trailing)", range(first, length), even=False)


FORMATS: Mapping[FormatName, WiegandFormat] = {
    f.name: f
    for f in (
        WiegandFormat(
            "H10301", "26-bit standard: 8-bit facility, 16-bit card", 26,
            (_leading_even(12), _trailing_odd(13, 26)), card=range(9, 25), facility=range(1, 9),
        ),
        WiegandFormat(
            "H10306", "34-bit: 16-bit facility, 16-bit card", 34,
            (_leading_even(16), _trailing_odd(17, 34)), card=range(17, 33), facility=range(1, 17),
        ),
        WiegandFormat(
            "H10304", "37-bit with facility: 16-bit facility, 19-bit card", 37,
            (_leading_even(18), _trailing_odd(18, 37)), card=range(17, 36), facility=range(1, 17),
        ),
        WiegandFormat(
            "H10302", "37-bit without facility: 35-bit card", 37,
            (_leading_even(18), _trailing_odd(18, 37)), card=range(1, 36),
        ),
    )
}

# H10304 rather than H10302 for 37 bits: with the facility code checked, a card from another
# site with the same card number is not let in.
DEFAULT_FORMATS: tuple[FormatName, ...] = ("H10301", "H10306", "H10304")

# Keypad bursts: 4 bits = the key value; 8 bits = the complement nibble, then the key nibble
# (so a bit lost on the wire shows up as a mismatch rather than a different key).
KEY_SYMBOLS = "0123456789*#"


@dataclass(frozen=True, slots=True)
class WiegandCard:
    format: FormatName
    number: int = field(repr=False)
    facility: int | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class WiegandKey:
    # repr hidden: a sequence of logged keys is a logged PIN.
    symbol: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class WiegandError:
    """Why a frame was refused. Safe to log: it names the format and check, never the bits."""

    length: int
    reason: str
    format: FormatName | None = None
    parity: str | None = None  # the ParityCheck.name that failed


WiegandFrame = WiegandCard | WiegandKey | WiegandError


def _value(bits: tuple[int, ...], positions: range) -> int:
    value = 0
    for i in positions:
        value = (value << 1) | bits[i]
    return value


def formats_by_length(names: Iterable[FormatName]) -> dict[int, WiegandFormat]:
    """The site's formats keyed by frame length; two formats of one length are a config error."""
    table: dict[int, WiegandFormat] = {}
    for name in names:
        fmt = FORMATS[name]
        if fmt.length in table:
            raise ValueError(
                f"Wiegand formats {table[fmt.length].name} and {name} are both {fmt.length} bits; "
                "a reader can only use one of them"
            )
        table[fmt.length] = fmt
    return table


def decode(bits: tuple[int, ...], formats: Iterable[FormatName] = DEFAULT_FORMATS) -> WiegandFrame:
    """Decode one frame. Total: any tuple gives a value; anything but 0/1 bits is an error value."""
    try:
        frame = tuple(bits)
    except TypeError:
        return WiegandError(0, "not a sequence of bits")
    if any(b not in (0, 1) or isinstance(b, float) for b in frame):
        return WiegandError(len(frame), "bits must be 0 or 1")
    length = len(frame)
    if length == 4:
        return _key(_value(frame, range(4)), length)
    if length == 8:
        complement, key = _value(frame, range(4)), _value(frame, range(4, 8))
        if complement != key ^ 0xF:
            return WiegandError(length, "8-bit keypad frame: high nibble is not the complement of the key")
        return _key(key, length)
    fmt = formats_by_length(formats).get(length)
    if fmt is None:
        return WiegandError(length, f"no configured format is {length} bits long")
    for check in fmt.parity:
        if not check.holds(frame):
            return WiegandError(length, f"{fmt.name}: {check.name} parity failed", fmt.name, check.name)
    facility = _value(frame, fmt.facility) if fmt.facility is not None else None
    return WiegandCard(fmt.name, _value(frame, fmt.card), facility)


def _key(value: int, length: int) -> WiegandFrame:
    if value < len(KEY_SYMBOLS):
        return WiegandKey(KEY_SYMBOLS[value])
    return WiegandError(length, f"{length}-bit keypad frame: value {value} is not a key")


def card_key(card: WiegandCard) -> str:
    """The canonical card string the grant cache stores (see the module docstring)."""
    if card.facility is not None:
        return f"{card.facility}:{card.number}"
    return f"{card.number:0{FORMATS[card.format].card_digits}d}"


def encode(fmt_name: FormatName, number: int, facility: int | None = None) -> tuple[int, ...]:
    """The frame a reader sends for this card, parity included.

    For tests, the bench and `door-bridge doctor` (to send a known card down the wire). Raises
    ValueError on a number that does not fit: that is a programmer's error.
    """
    fmt = FORMATS[fmt_name]
    if (fmt.facility is None) != (facility is None):
        raise ValueError(f"{fmt_name} {'has no' if fmt.facility is None else 'needs a'} facility code")
    frame = [0] * fmt.length
    fields = [(fmt.card, number)] + ([(fmt.facility, facility)] if fmt.facility is not None and facility is not None else [])
    for positions, value in fields:
        if not 0 <= value < (1 << len(positions)):
            raise ValueError(f"{value} does not fit in {len(positions)} bits of {fmt_name}")
        for offset, i in enumerate(reversed(positions)):
            frame[i] = (value >> offset) & 1
    for check in fmt.parity:
        parity_bit = check.covers[0] if check.covers[0] == 0 else check.covers[-1]
        frame[parity_bit] = 0
        if not check.holds(tuple(frame)):
            frame[parity_bit] = 1
    return tuple(frame)


def encode_key(symbol: str, bits: Literal[4, 8] = 8) -> tuple[int, ...]:
    """The burst a keypad sends for one key (for tests and the bench)."""
    value = KEY_SYMBOLS.index(symbol)
    word = value if bits == 4 else ((value ^ 0xF) << 4) | value
    return tuple((word >> shift) & 1 for shift in reversed(range(bits)))
