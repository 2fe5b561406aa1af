"""The credential parser: every shape the door meets, and everything else as Malformed, never a raise."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.builders import INVITE, make_jwt, user_claims
from verifier.credentials import MAX_SCAN_BYTES, card_key, parse
from verifier.types import (
    CardNumber,
    CredentialJwt,
    DigitalIdToken,
    InviteCode,
    Malformed,
    Pin,
    fingerprint,
    secret_of,
)

CREDENTIAL_TYPES = (CardNumber, CredentialJwt, DigitalIdToken, InviteCode, Pin, Malformed)


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


# --- cards ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scan", "number"),
    [
        ("6B06C2A25E99C68EDCBE", "6B06C2A25E99C68EDCBE"),  # SNA, as printed in the seed
        ("6b06c2a25e99c68edcbe", "6B06C2A25E99C68EDCBE"),  # lower case
        ("04:a2:2c:1a:7b:3f:80", "04A22C1A7B3F80"),  # NFC UID as nfc-list prints it
        ("04-A2-2C-1A-7B-3F-80", "04A22C1A7B3F80"),
        ("04 A2 2C 1A 7B 3F 80", "04A22C1A7B3F80"),
        ("04A2:2C1A:7B3F", "04A22C1A7B3F"),  # groups of four
        ("0x04a22c1a", "04A22C1A"),
        ("0X04A22C1A", "04A22C1A"),
        ("3054721", "3054721"),  # Sifely decimal card number
        ("123:45678", "123:45678"),  # Wiegand facility:card
        ("0123:0045678", "123:45678"),  # leading zeros are the same card
        ("4194303:8388607", "4194303:8388607"),  # HID Corporate 1000 48-bit: 22-bit company ID (7 digits)
    ],
)
def test_card_numbers_normalise_to_one_spelling(scan: str, number: str) -> None:
    assert parse(scan.encode()) == CardNumber(number)
    assert parse(scan.encode(), hint="card") == CardNumber(number)
    assert card_key(scan) == number


@pytest.mark.parametrize("scan", ["04:A2-2C:1A", "04:A:2C", "hello", "12:", "GHIJKL", "123", "12345678:1"])
def test_not_a_card_number_is_malformed(scan: str) -> None:
    assert isinstance(parse(scan.encode(), hint="card"), Malformed)
    assert card_key(scan) is None


def test_scanner_line_endings_are_stripped() -> None:
    assert parse(b"6B06C2A25E99C68EDCBE\r\n") == CardNumber("6B06C2A25E99C68EDCBE")
    assert parse(b"  6B06C2A25E99C68EDCBE\n") == CardNumber("6B06C2A25E99C68EDCBE")


# --- JWTs, Digital ID, Frontelio visitors ---------------------------------------------------------


def test_credential_jwt_is_recognised() -> None:
    token = make_jwt(user_claims())
    assert parse(token.encode()) == CredentialJwt(token)
    assert parse(token.encode() + b"\r\n") == CredentialJwt(token)


def test_jwt_shaped_text_whose_header_is_not_json_is_malformed() -> None:
    assert isinstance(parse(b"eyJub3QganNvbg.eyJ4IjoxfQ.c2ln"), Malformed)
    assert isinstance(parse(f"{_b64(['alg'])}.eyJ4IjoxfQ.c2ln".encode()), Malformed)  # header not an object
    assert isinstance(parse(f"{_b64({'typ': 'JWT'})}.eyJ4IjoxfQ.c2ln".encode()), Malformed)  # no alg


def test_deeply_nested_jwt_header_is_malformed_not_a_crash() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"EdDSA","x":' + b"[" * 1400 + b"]" * 1400 + b"}").decode().rstrip("=")
    scan = f"{header}.eyJ4IjoxfQ.c2ln".encode()
    assert len(scan) <= MAX_SCAN_BYTES
    assert isinstance(parse(scan), Malformed)


@pytest.mark.parametrize(
    "url",
    [
        "https://id.example/verify.php?token=abc123XYZ",
        "https://id.example/building/verify-token.php?token=abc123XYZ",
        "HTTPS://ID.EXAMPLE/verify.php?token=abc123XYZ&lang=en",
        "http://id.example/verify.php?lang=en&token=abc123XYZ",
    ],
)
def test_digital_id_qr_url_yields_its_token(url: str) -> None:
    assert parse(url.encode()) == DigitalIdToken("abc123XYZ")


@pytest.mark.parametrize(
    "url",
    [
        "https://id.example/verify.php",  # no token
        "https://id.example/verify.php?token=abc",  # too short
        "https://id.example/verify.php?token=abc123XYZ&token=def456UVW",  # ambiguous
        "https://id.example/verify.php?token=abc%20123XYZ",  # not base64url
        "https://evil.example/phish?token=abc123XYZ",
        "https://app.frontelio.com/visitor/not-a-code",
        "https://app.frontelio.com/elsewhere/" + INVITE,
        "https://[::1/verify.php?token=abc123XYZ",  # URL does not parse
        "ftp://id.example/verify.php?token=abc123XYZ",
    ],
)
def test_unknown_or_broken_urls_are_malformed(url: str) -> None:
    result = parse(url.encode())
    assert isinstance(result, Malformed)
    assert "abc123XYZ" not in result.why and "evil" not in result.why


def test_frontelio_invite_code_and_its_redeem_url() -> None:
    assert parse(INVITE.encode()) == InviteCode(INVITE)
    assert parse(f"https://app.frontelio.com/visitor/{INVITE}".encode()) == InviteCode(INVITE)
    assert parse(f"https://app.frontelio.com/visitor/{INVITE}/".encode()) == InviteCode(INVITE)


@pytest.mark.parametrize("scan", ["vis_short", "vis_" + "a" * 65, "vis_has spaces in it here", "vis_ünïcødé_ünïcødé_ü"])
def test_invite_code_of_the_wrong_shape_is_malformed(scan: str) -> None:
    assert isinstance(parse(scan.encode()), Malformed)


# --- PINs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scan", "digits"), [("1234#", "1234"), ("090817263#", "090817263"), ("123456789012#", "123456789012")])
def test_wedge_keypad_pin_ends_with_hash(scan: str, digits: str) -> None:
    assert parse(scan.encode()) == Pin(digits)


def test_hint_pin_takes_digits_only() -> None:
    assert parse(b"4711", hint="pin") == Pin("4711")
    assert parse(b"0000", hint="pin") == Pin("0000")  # leading zeros are part of a PIN
    for bad in (b"471", b"47a1", b"1234567890123", b"12 34", b"4711#"):
        assert isinstance(parse(bad, hint="pin"), Malformed), bad


def test_hint_card_does_not_read_jwts_or_urls() -> None:
    assert isinstance(parse(make_jwt(user_claims()).encode(), hint="card"), Malformed)
    assert isinstance(parse(b"https://id.example/verify.php?token=abc123XYZ", hint="card"), Malformed)


def test_short_pin_with_hash_is_malformed() -> None:
    assert isinstance(parse(b"123#"), Malformed)


# --- hostile input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"\r\n", "empty"),
        (b"   ", "empty"),
        (b"\xff\xfe6B06", "UTF-8"),
        (b"\xc3\x28", "UTF-8"),
        (b"\xed\xa0\x80", "UTF-8"),  # an encoded surrogate
        (b"6B06\x00C2A2", "control"),
        (b"6B06\tC2A2", "control"),
        (b"\x1b[31m6B06C2A2", "control"),
        ("\ufeff6B06C2A2".encode(), "control"),  # BOM: format character
        ("6B06\u2028C2A2".encode(), None),  # line separator: neither a card nor a control char
        (b"A" * (MAX_SCAN_BYTES + 1), "longer"),
    ],
)
def test_hostile_input_is_malformed_with_a_safe_reason(raw: bytes, why: str | None) -> None:
    result = parse(raw)
    assert isinstance(result, Malformed)
    if why is not None:
        assert why in result.why
    assert "6B06" not in result.why


def test_size_cap_applies_before_anything_else() -> None:
    claims = user_claims()
    claims["pad"] = ""
    token = make_jwt(claims)
    claims["pad"] = "x" * (MAX_SCAN_BYTES - len(token))
    token = make_jwt(claims)
    while len(token) > MAX_SCAN_BYTES:  # base64 rounding: trim until it fits exactly or just under
        claims["pad"] = claims["pad"][:-1]
        token = make_jwt(claims)
    assert MAX_SCAN_BYTES - 4 <= len(token) <= MAX_SCAN_BYTES
    assert isinstance(parse(token.encode()), CredentialJwt)
    assert isinstance(parse(token.encode() + b"x" * (MAX_SCAN_BYTES + 1 - len(token))), Malformed)


# --- secrets stay secret -------------------------------------------------------------------------

SECRET_BEARING = [
    CardNumber("6B06C2A25E99C68EDCBE"),
    CredentialJwt("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyX2xheWxhIn0.c2lnbmF0dXJl"),
    DigitalIdToken("abc123XYZsecret"),
    InviteCode(INVITE),
    Pin("90817263"),
]


@pytest.mark.parametrize("credential", SECRET_BEARING, ids=lambda c: c.kind)
def test_repr_str_and_fingerprint_never_show_the_secret(credential) -> None:
    secret = secret_of(credential)
    for shown in (repr(credential), str(credential), f"{credential}", fingerprint(credential, KEY)):
        assert secret not in shown
        assert secret[:6] not in shown
    assert fingerprint(credential, KEY).startswith(credential.kind + ":")


KEY = bytes(range(32))


def test_fingerprint_is_stable_and_tells_credentials_apart() -> None:
    assert fingerprint(Pin("1234"), KEY) == fingerprint(Pin("1234"), KEY)
    assert fingerprint(Pin("1234"), KEY) != fingerprint(Pin("1235"), KEY)
    assert fingerprint(Pin("1234"), KEY) != fingerprint(CardNumber("1234"), KEY)


def test_fingerprint_cannot_be_tested_against_guesses_without_the_key() -> None:
    """A logged fingerprint of a 4-digit PIN must not fall to 10,000 hashes (issue 10, High 1):
    neither the old plain sha256(kind:secret) nor any other bridge's key reproduces it."""
    import hashlib

    logged = fingerprint(Pin("4711"), KEY)
    plain = {"pin:" + hashlib.sha256(f"pin:{n:04d}".encode()).hexdigest()[: len(logged) - 4] for n in range(10_000)}
    plain8 = {"pin:" + hashlib.sha256(f"pin:{n:04d}".encode()).hexdigest()[:8] for n in range(10_000)}
    assert logged not in plain and logged not in plain8
    other_bridge = {fingerprint(Pin(f"{n:04d}"), bytes(32)) for n in range(10_000)}
    assert logged not in other_bridge
    assert fingerprint(Pin("4711"), KEY) != fingerprint(Pin("4711"), bytes(32))
    with pytest.raises(ValueError):
        fingerprint(Pin("4711"), b"short")


# --- properties ----------------------------------------------------------------------------------


def _check_total(raw: bytes, hint: str | None) -> None:
    result = parse(raw, hint=hint)
    assert isinstance(result, CREDENTIAL_TYPES)
    if not isinstance(result, Malformed):
        secret = secret_of(result)
        assert secret and secret not in repr(result)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=MAX_SCAN_BYTES + 64), hint=st.sampled_from([None, "pin", "card", "nfc"]))
def test_arbitrary_bytes_never_raise(raw: bytes, hint: str | None) -> None:
    _check_total(raw, hint)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=600), hint=st.sampled_from([None, "pin", "card"]))
def test_arbitrary_text_never_raises(text: str, hint: str | None) -> None:
    _check_total(text.encode("utf-8", "surrogatepass"), hint)


_shaped = st.one_of(
    st.builds(lambda s: "eyJ" + s, st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_.=", max_size=300)),
    st.builds(lambda s: "https://id.example/verify.php?" + s, st.text(max_size=200)),
    st.builds(lambda s: "https://app.frontelio.com/visitor/" + s, st.text(max_size=200)),
    st.builds(lambda s: "vis_" + s, st.text(max_size=100)),
    st.builds(lambda s: s + "#", st.text(alphabet="0123456789#", max_size=20)),
    st.builds(lambda s: s, st.text(alphabet="0123456789abcdefABCDEFxX:- ", max_size=60)),
)


@settings(max_examples=400, deadline=None)
@given(text=_shaped)
def test_near_miss_shapes_never_raise(text: str) -> None:
    _check_total(text.encode("utf-8", "surrogatepass"), None)


@settings(max_examples=100, deadline=None)
@given(claims=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20)), max_size=5),
       header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "x"]),
                              st.one_of(st.text(max_size=10), st.integers()), max_size=4))
def test_jwt_shaped_input_is_a_jwt_only_when_the_header_names_an_alg(claims, header) -> None:
    token = f"{_b64(header)}.{_b64(claims)}.c2ln"
    result = parse(token.encode())
    if token.startswith("eyJ") and isinstance(header.get("alg"), str):
        assert result == CredentialJwt(token)
    else:
        assert not isinstance(result, CredentialJwt)


def test_pyjwt_tokens_of_every_algorithm_parse() -> None:
    for token in (make_jwt(user_claims()), make_jwt(user_claims(), alg="ES256"), make_jwt(user_claims(), alg="HS256"),
                  jwt.encode(user_claims(), None, algorithm="none")):  # type: ignore[arg-type]
        assert parse(token.encode()) == CredentialJwt(token)
