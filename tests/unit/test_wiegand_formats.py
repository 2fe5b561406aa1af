"""The Wiegand format library: each built-in format against vectors written from its published
layout (not from `encode`), every parity failure named, and site-defined formats from the config.
"""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import ConfigError, from_dict
from bridge.config.wiegand import SiteFormat, format_table
from verifier.credentials import parse
from verifier.types import CardNumber
from verifier.wiegand_formats import (
    FORMATS,
    WiegandCard,
    WiegandError,
    card_key,
    decode,
    decode_bytes,
    encode,
    encode_bytes,
)


def bits_of(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.replace(" ", ""))


def one_based(positions: Any) -> set[int]:
    return {p + 1 for p in positions}


# --- vectors from the published layouts ------------------------------------------------------

# Each: format, facility, card, the frame written out field by field from the data sheet.
VECTORS = [
    # H10301: P(even over 2-13) | 8-bit facility | 16-bit card | P(odd over 14-25)
    ("H10301", 123, 4567, "1 01111011 0001000111010111 0"),
    # H10306: P(even over 2-17) | 16-bit facility 1 | 16-bit card 1 | P(odd over 18-33): one 1 each half
    ("H10306", 1, 1, "1 0000000000000001 0000000000000001 0"),
    # H10304: P(even over 2-19: bit 17) → 1 | 16-bit facility 1 | 19-bit card 2 | P(odd over 19-36: bit 35) → 0
    ("H10304", 1, 2, "1 0000000000000001 0000000000000000010 0"),
    # H10302: P(even over 2-19) | 35-bit card 5 | P(odd over 19-36): bits 34 and 36 are 1 → 1
    ("H10302", None, 5, "0 00000000000000000000000000000000101 1"),
    # Corporate 1000 35-bit, company 1, card 1. Bit 2: even over 3-4, 6-7, …, 33-34 (bit 34 is 1,
    # bit 14 is not covered) → 1. Bit 35: odd over 2-3, 5-6, …, 32-33 (bits 2 and 14 are 1) → 1.
    # Bit 1: odd over all (bits 2, 14, 34, 35 are 1) → 1.
    ("C1000-35", 1, 1, "1 1 000000000001 00000000000000000001 1"),
    # Corporate 1000 48-bit, company 1, card 1. Bit 2: even over 4-5, 7-8, …, 46-47 (bit 47) → 1.
    # Bit 48: odd over 3-4, 6-7, …, 45-46 (bit 24) → 0. Bit 1: odd over all (bits 2, 24, 47) → 0.
    ("C1000-48", 1, 1, "0 1 0000000000000000000001 00000000000000000000001 0"),
    # 32-bit raw: the frame is the number.
    ("RAW32", None, 0xDEADBEEF, "11011110101011011011111011101111"),
]


@pytest.mark.parametrize(("fmt", "facility", "number", "frame"), VECTORS)
def test_published_layout_vector_decodes_and_encodes(fmt: str, facility: int | None, number: int, frame: str) -> None:
    bits = bits_of(frame)
    assert len(bits) == FORMATS[fmt].length
    assert decode(bits, formats=[fmt]) == WiegandCard(fmt, number, facility)
    assert encode(fmt, number, facility) == bits


def test_corporate_1000_parity_bits_cover_what_hid_publishes() -> None:
    even, trailing, overall = FORMATS["C1000-35"].parity
    assert (even.bit, trailing.bit, overall.bit) == (1, 34, 0)
    pairs_from = lambda first, last: {b for b in range(first, last + 1) if (b - first) % 3 != 2}  # noqa: E731
    assert one_based(even.covers) - {2} == pairs_from(3, 34)  # 3-4, 6-7, …, 33-34
    assert one_based(trailing.covers) - {35} == pairs_from(2, 33)  # 2-3, 5-6, …, 32-33
    assert one_based(overall.covers) == set(range(1, 36))
    even, trailing, overall = FORMATS["C1000-48"].parity
    assert one_based(even.covers) - {2} == pairs_from(4, 47)
    assert one_based(trailing.covers) - {48} == pairs_from(3, 46)
    assert one_based(overall.covers) == set(range(1, 49))
    assert one_based(FORMATS["C1000-35"].facility or ()) == set(range(3, 15))
    assert one_based(FORMATS["C1000-48"].card) == set(range(25, 48))


@pytest.mark.parametrize("fmt", ["H10301", "H10306", "H10304", "H10302", "C1000-35", "C1000-48"])
def test_every_single_bit_error_fails_a_named_parity_check(fmt: str) -> None:
    spec = FORMATS[fmt]
    good = encode(fmt, 12345, 77 if spec.facility else None)
    for i in range(len(good)):
        bad = list(good)
        bad[i] ^= 1
        result = decode(tuple(bad), formats=[fmt])
        assert isinstance(result, WiegandError), f"{fmt}: bit {i + 1} flipped was accepted"
        assert result.format == fmt and result.parity is not None and fmt in result.reason
        failed = next(c for c in spec.parity if c.name == result.parity)
        assert not failed.holds(tuple(bad)) and i in failed.covers


def test_raw32_has_no_parity_so_a_flipped_bit_is_another_number() -> None:
    # Documented, not hidden: RAW32 is for readers that offer nothing better.
    flipped = list(encode("RAW32", 1))
    flipped[0] ^= 1
    assert decode(tuple(flipped), formats=["RAW32"]) == WiegandCard("RAW32", (1 << 31) | 1)


@pytest.mark.parametrize(("fmt", "facility", "number"), [("C1000-35", 4095, 1048575), ("C1000-48", 4194303, 8388607),
                                                          ("RAW32", None, 7)])
def test_new_formats_card_keys_are_card_numbers_the_parser_keeps(fmt: str, facility: int | None, number: int) -> None:
    card = decode(encode(fmt, number, facility), formats=[fmt])
    assert isinstance(card, WiegandCard)
    key = card_key(card)
    assert parse(key.encode(), "card") == CardNumber(key)
    assert key == (f"{facility}:{number}" if facility is not None else "0000000007")


def test_bytes_carry_the_first_bit_in_the_top_bit() -> None:
    frame = bits_of(VECTORS[0][3])
    data = encode_bytes(frame)
    assert data == bytes([0b10111101, 0b10001000, 0b11101011, 0b10000000])
    assert decode_bytes(data, 26, ["H10301"]) == WiegandCard("H10301", 4567, 123)
    assert isinstance(decode_bytes(data, 33, ["H10301"]), WiegandError)  # 4 bytes cannot hold 33 bits


# --- site-defined formats --------------------------------------------------------------------

# A made-up 40-bit site format: even parity at bit 1 over 2-20, odd at bit 40 over 21-39,
# a 12-bit facility at 3-14, a 24-bit card at 15-38; bit 2 and 39 are spare.
ACME40 = {"length": 40, "facility": "3-14", "card": "15-38", "description": "ACME 40-bit",
          "parity": [{"bit": 1, "covers": ["2-20"], "sense": "even"}, {"bit": 40, "covers": ["21-39"], "sense": "odd"}]}


def site_config(formats: dict[str, Any], reader_formats: list[str]) -> dict[str, Any]:
    return {"doors": {"main": {"relay_pin": 17}}, "wiegand_formats": formats,
            "readers": [{"type": "wiegand", "id": "W-1", "d0_pin": 5, "d1_pin": 6, "formats": reader_formats}]}


def test_site_format_from_config_decodes_frames_hand_written_from_its_layout() -> None:
    config = from_dict(site_config({"ACME40": ACME40}, ["H10301", "ACME40"]))
    table = format_table(config.readers[0].formats, config.site_wiegand_formats())  # type: ignore[union-attr]
    # facility 5 = 000000000101, card 9 = 0…01001; bits 2-20 hold facility + card's top 6 bits: two 1s → P1 = 0;
    # bits 21-39 hold two 1s (card bits 8 and 1) → odd P40 = 1.
    frame = bits_of("0 0 000000000101 000000000000000000001001 0 1")
    card = decode(frame, table)
    assert card == WiegandCard("ACME40", 9, 5) and card_key(card) == "5:9"  # type: ignore[arg-type]
    bad = list(frame)
    bad[30] ^= 1
    result = decode(tuple(bad), table)
    assert isinstance(result, WiegandError) and result.parity == "odd (bit 40)" and "ACME40" in result.reason
    assert decode(encode("H10301", 1, 2), table) == WiegandCard("H10301", 1, 2)  # built-ins still there


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"card": "10-38"}, "wiegand_formats.ACME40", "card and facility fields overlap"),
        ({"card": "15-45"}, "wiegand_formats.ACME40", "not inside 1-40"),
        ({"card": "fifteen"}, "wiegand_formats.ACME40.card", "not a bit range"),
        ({"parity": [{"bit": 3, "covers": ["4-20"], "sense": "even"}]}, "wiegand_formats.ACME40", "part of the card or facility"),
        ({"parity": [{"bit": 1, "covers": ["1-20"], "sense": "even"}]}, "wiegand_formats.ACME40", "cannot cover itself"),
        ({"parity": [{"bit": 1, "covers": ["2-40"], "sense": "even"}, {"bit": 40, "covers": ["21-39"], "sense": "odd"}]},
         "wiegand_formats.ACME40", "covers parity bit 40, which is listed later"),
        ({"parity": [{"bit": 1, "covers": ["2-20"], "sense": "sideways"}]}, "wiegand_formats.ACME40.parity.0.sense", "'even' or 'odd'"),
        ({"facility": "1-30", "card": "31-38", "parity": []}, "wiegand_formats.ACME40", "at most 23 bits"),
        ({"length": 80}, "wiegand_formats.ACME40.length", "less than or equal to 64"),
    ],
)
def test_site_format_mistakes_are_named_at_check_config_time(change: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_dict(site_config({"ACME40": {**ACME40, **change}}, ["ACME40"]), source="site.toml")
    assert f"site.toml: {key}: " in str(error.value) and message in str(error.value)


def test_reader_naming_an_unknown_or_clashing_format_is_named() -> None:
    with pytest.raises(ConfigError, match=r"readers\.0\.wiegand\.formats: unknown Wiegand format 'ACME41'.*site formats: ACME40"):
        from_dict(site_config({"ACME40": ACME40}, ["ACME41"]))
    clash = {**ACME40, "length": 26, "facility": "3-10", "card": "11-25",
             "parity": [{"bit": 1, "covers": ["2-13"], "sense": "even"}, {"bit": 26, "covers": ["14-25"], "sense": "odd"}]}
    with pytest.raises(ConfigError, match="H10301 and SITE26 are both 26 bits"):
        from_dict(site_config({"SITE26": clash}, ["H10301", "SITE26"]))


def test_site_format_cannot_take_a_built_in_name() -> None:
    with pytest.raises(ConfigError, match="built-in format name"):
        from_dict(site_config({"H10301": ACME40}, ["H10301"]))


def test_site_format_model_alone_rejects_a_bad_range() -> None:
    with pytest.raises(ValueError):
        SiteFormat.model_validate({**ACME40, "card": "38-15"}).build("X")
