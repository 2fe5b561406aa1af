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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

# The built-in formats. Site-defined formats (config `[wiegand_formats.NAME]`) are plain
# `WiegandFormat` values with a name of the site's choosing.
FormatName = Literal["H10301", "H10306", "H10304", "H10302", "C1000-35", "C1000-48", "RAW32"]

# The canonical `facility:card` spelling is parsed back by `verifier.credentials.normalise_card`,
# which takes up to 7 facility digits and 12 card digits: so at most 23 and 39 bits.
MAX_FACILITY_BITS = 23
MAX_CARD_BITS_WITH_FACILITY = 39
# The longest frame any format may have (a reader's frame buffer holds this many bits).
MAX_FRAME_BITS = 64


@dataclass(frozen=True, slots=True)
class ParityCheck:
    """One parity bit and the bits it covers (positions in the frame, the parity bit included).

    `bit` is the parity bit's own position. Checks are listed in the order an encoder computes
    them: a check may cover an earlier check's parity bit (HID Corporate 1000's overall parity
    covers the other two), never a later one's.
    """

    name: str  # what a technician reads in the log: "even (leading)" / "odd (trailing)"
    covers: Sequence[int]
    even: bool
    bit: int

    def holds(self, bits: tuple[int, ...]) -> bool:
        ones = sum(bits[i] for i in self.covers)
        return ones % 2 == (0 if self.even else 1)


@dataclass(frozen=True, slots=True)
class WiegandFormat:
    name: str
    description: str
    length: int
    parity: tuple[ParityCheck, ...]
    card: range  # bit positions of the card number, most significant first
    facility: range | None = None

    @property
    def card_digits(self) -> int:
        # At least 4: the card parser wants 4+ characters for a card number.
        return max(4, len(str((1 << len(self.card)) - 1)))


def _leading_even(last: int) -> ParityCheck:
    return ParityCheck("even (leading)", range(last + 1), even=True, bit=0)


def _trailing_odd(first: int, length: int) -> ParityCheck:
    return ParityCheck("odd (trailing)", range(first, length), even=False, bit=length - 1)


def _corporate_1000(name: str, length: int, facility_bits: int, card_bits: int, pairs_from: int) -> WiegandFormat:
    """HID Corporate 1000 (35 and 48 bit), from HID's published layout (bits counted from 1):

    - bit 1: odd parity over the whole frame (so it also covers the other two parity bits);
    - bit 2: even parity over pairs of bits with one left out between them, from bit
      `pairs_from + 1` (35-bit: bits 3-4, 6-7, …, 33-34; 48-bit: 4-5, 7-8, …, 46-47);
    - the last bit: odd parity over the pairs one bit earlier (35-bit: 2-3, 5-6, …, 32-33;
      48-bit: 3-4, 6-7, …, 45-46) — bit 2 is in them for the 35-bit layout;
    - the company ID from bit 3, then the card number, up to the last parity bit.
    """
    last = length - 1

    def pairs(first: int, stop: int) -> tuple[int, ...]:
        return tuple(p for p in range(first, stop) if (p - first) % 3 != 2)

    company = range(2, 2 + facility_bits)
    return WiegandFormat(
        name, f"HID Corporate 1000 {length}-bit: {facility_bits}-bit company ID, {card_bits}-bit card", length,
        (ParityCheck("even (bit 2)", (1, *pairs(pairs_from, last)), even=True, bit=1),
         ParityCheck(f"odd (bit {length})", (*pairs(pairs_from - 1, last - 1), last), even=False, bit=last),
         ParityCheck("odd (bit 1, whole frame)", range(length), even=False, bit=0)),
        card=range(company.stop, company.stop + card_bits), facility=company,
    )


FORMATS: Mapping[str, WiegandFormat] = {
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
        _corporate_1000("C1000-35", 35, 12, 20, pairs_from=2),
        _corporate_1000("C1000-48", 48, 22, 23, pairs_from=3),
        # A reader that sends a card's 32-bit serial number (CSN/UID) as it is. No parity: line
        # noise becomes another number, so use it only where the reader offers nothing better.
        WiegandFormat("RAW32", "32-bit raw: the whole frame is the card number, no parity", 32, (), card=range(0, 32)),
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
    format: str
    number: int = field(repr=False)
    facility: int | None = field(default=None, repr=False)
    # Zero-padding width of a card without facility (site formats are not in FORMATS).
    digits: int = field(default=0, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class WiegandKey:
    # repr hidden: a sequence of logged keys is a logged PIN.
    symbol: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class WiegandError:
    """Why a frame was refused. Safe to log: it names the format and check, never the bits."""

    length: int
    reason: str
    format: str | None = None
    parity: str | None = None  # the ParityCheck.name that failed


WiegandFrame = WiegandCard | WiegandKey | WiegandError


def _value(bits: tuple[int, ...], positions: range) -> int:
    value = 0
    for i in positions:
        value = (value << 1) | bits[i]
    return value


FormatRef = str | WiegandFormat


def resolve(ref: FormatRef) -> WiegandFormat:
    """A built-in format by name, or a site format as it is."""
    return ref if isinstance(ref, WiegandFormat) else FORMATS[ref]


def formats_by_length(formats: Iterable[FormatRef]) -> dict[int, WiegandFormat]:
    """The site's formats keyed by frame length; two formats of one length are a config error."""
    table: dict[int, WiegandFormat] = {}
    for ref in formats:
        fmt = resolve(ref)
        if fmt.length in table:
            raise ValueError(
                f"Wiegand formats {table[fmt.length].name} and {fmt.name} are both {fmt.length} bits; "
                "a reader can only use one of them"
            )
        table[fmt.length] = fmt
    return table


def decode(bits: tuple[int, ...], formats: Iterable[FormatRef] | Mapping[int, WiegandFormat] = DEFAULT_FORMATS) -> WiegandFrame:
    """Decode one frame. Total: any tuple gives a value; anything but 0/1 bits is an error value.

    `formats` is names/formats, or a table already made by `formats_by_length` (readers build it
    once at start-up).
    """
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
    table = formats if isinstance(formats, Mapping) else formats_by_length(formats)
    fmt = table.get(length)
    if fmt is None:
        return WiegandError(length, f"no configured format is {length} bits long")
    for check in fmt.parity:
        if not check.holds(frame):
            return WiegandError(length, f"{fmt.name}: {check.name} parity failed", fmt.name, check.name)
    facility = _value(frame, fmt.facility) if fmt.facility is not None else None
    return WiegandCard(fmt.name, _value(frame, fmt.card), facility, digits=fmt.card_digits)


def decode_bytes(data: bytes, length: int, formats: Iterable[FormatRef] | Mapping[int, WiegandFormat]) -> WiegandFrame:
    """A frame packed into bytes, first bit in the most significant bit of the first byte (as
    OSDP's osdp_RAW carries Wiegand bits)."""
    if length < 0 or (length + 7) // 8 != len(data):
        return WiegandError(max(length, 0), f"{len(data)} data bytes do not hold {length} bits")
    return decode(tuple((data[i // 8] >> (7 - i % 8)) & 1 for i in range(length)), formats)


def _key(value: int, length: int) -> WiegandFrame:
    if value < len(KEY_SYMBOLS):
        return WiegandKey(KEY_SYMBOLS[value])
    return WiegandError(length, f"{length}-bit keypad frame: value {value} is not a key")


def card_key(card: WiegandCard) -> str:
    """The canonical card string the grant cache stores (see the module docstring)."""
    if card.facility is not None:
        return f"{card.facility}:{card.number}"
    digits = card.digits or FORMATS[card.format].card_digits
    return f"{card.number:0{digits}d}"


def encode(fmt_ref: FormatRef, number: int, facility: int | None = None) -> tuple[int, ...]:
    """The frame a reader sends for this card, parity included.

    For tests, the bench and `door-bridge doctor` (to send a known card down the wire). Raises
    ValueError on a number that does not fit: that is a programmer's error.
    """
    fmt = resolve(fmt_ref)
    if (fmt.facility is None) != (facility is None):
        raise ValueError(f"{fmt.name} {'has no' if fmt.facility is None else 'needs a'} facility code")
    frame = [0] * fmt.length
    fields = [(fmt.card, number)] + ([(fmt.facility, facility)] if fmt.facility is not None and facility is not None else [])
    for positions, value in fields:
        if not 0 <= value < (1 << len(positions)):
            raise ValueError(f"{value} does not fit in {len(positions)} bits of {fmt.name}")
        for offset, i in enumerate(reversed(positions)):
            frame[i] = (value >> offset) & 1
    for check in fmt.parity:  # in the listed order: a later check may cover an earlier one's bit
        frame[check.bit] = 0
        if not check.holds(tuple(frame)):
            frame[check.bit] = 1
    return tuple(frame)


def encode_bytes(frame: tuple[int, ...]) -> bytes:
    """Bits → bytes, first bit in the most significant bit (the inverse of `decode_bytes`)."""
    out = bytearray((len(frame) + 7) // 8)
    for i, b in enumerate(frame):
        out[i // 8] |= b << (7 - i % 8)
    return bytes(out)


def encode_key(symbol: str, bits: Literal[4, 8] = 8) -> tuple[int, ...]:
    """The burst a keypad sends for one key (for tests and the bench)."""
    value = KEY_SYMBOLS.index(symbol)
    word = value if bits == 4 else ((value ^ 0xF) << 4) | value
    return tuple((word >> shift) & 1 for shift in reversed(range(bits)))


# --- site-defined formats ---------------------------------------------------------------------


def site_format(
    name: str,
    length: int,
    card: tuple[int, int],
    facility: tuple[int, int] | None,
    parity: Sequence[tuple[int, Sequence[int], bool]],
    description: str = "",
) -> WiegandFormat:
    """A format a site defines in its config, with bits counted from 1 as data sheets do.

    `card`/`facility` are inclusive (first, last) bit numbers; each parity entry is (its bit,
    the bits it covers, even). Raises ValueError with a message a site engineer can act on:
    every bit used once, fields that the canonical card string can carry, parity bits listed in
    the order they can be computed.
    """
    if name in FORMATS:
        raise ValueError(f"{name!r} is a built-in format name; give the site format another name")
    if not 9 <= length <= MAX_FRAME_BITS:
        raise ValueError(f"length must be 9-{MAX_FRAME_BITS} bits (4 and 8 are keypad bursts)")

    def field_range(label: str, span: tuple[int, int]) -> range:
        first, last = span
        if not 1 <= first <= last <= length:
            raise ValueError(f"{label}: bits {first}-{last} are not inside 1-{length}")
        return range(first - 1, last)

    card_range = field_range("card", card)
    facility_range = field_range("facility", facility) if facility is not None else None
    if facility_range is not None:
        if set(card_range) & set(facility_range):
            raise ValueError("card and facility fields overlap")
        if len(facility_range) > MAX_FACILITY_BITS:
            raise ValueError(f"facility: at most {MAX_FACILITY_BITS} bits (7 decimal digits)")
        if len(card_range) > MAX_CARD_BITS_WITH_FACILITY:
            raise ValueError(f"card: at most {MAX_CARD_BITS_WITH_FACILITY} bits with a facility field (12 decimal digits)")
    data_bits = set(card_range) | set(facility_range or ())
    checks: list[ParityCheck] = []
    computed: set[int] = set()
    parity_bits = {bit - 1 for bit, _, _ in parity}
    for i, (bit, covers, even) in enumerate(parity):
        label = f"parity.{i}"
        if not 1 <= bit <= length:
            raise ValueError(f"{label}: bit {bit} is not inside 1-{length}")
        position = bit - 1
        if position in data_bits:
            raise ValueError(f"{label}: bit {bit} is also part of the card or facility field")
        if position in computed:
            raise ValueError(f"{label}: bit {bit} is already another parity bit")
        covered = sorted({c - 1 for c in covers})
        if not covered:
            raise ValueError(f"{label}: covers no bits")
        if any(not 0 <= c < length for c in covered):
            raise ValueError(f"{label}: covers bits outside 1-{length}")
        if position in covered:
            raise ValueError(f"{label}: bit {bit} cannot cover itself (list only the bits it checks)")
        later = [c + 1 for c in covered if c in parity_bits and c not in computed]
        if later:
            raise ValueError(f"{label}: covers parity bit {later[0]}, which is listed later; list that one first")
        sense = "even" if even else "odd"
        checks.append(ParityCheck(f"{sense} (bit {bit})", (position, *covered), even=even, bit=position))
        computed.add(position)
    return WiegandFormat(name, description or f"site format, {length} bits", length, tuple(checks),
                         card=card_range, facility=facility_range)

