"""Raw scan bytes → one typed credential. Total: every input yields a value, none raises.

The parser is the first thing hostile input meets (a QR code is attacker-chosen text), so it
caps length before decoding, rejects control characters and invalid UTF-8, and recognises only
shapes it knows. Whatever it cannot name is `Malformed`, which the verifier turns into
DENY `MALFORMED_CREDENTIAL`.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from urllib.parse import parse_qs, urlsplit

from verifier.types import (
    CardNumber,
    Credential,
    CredentialJwt,
    DigitalIdToken,
    InviteCode,
    Malformed,
    Pin,
)

MAX_SCAN_BYTES = 4096
# The PIN rule, its one copy: 4 to 12 ASCII digits. Every keypad buffer keeps at most
# PIN_MAX_DIGITS (a longer entry is refused whole, never cut to a prefix that could be someone
# else's PIN), `grants add` refuses any other PIN, and an offline passcode is this long.
PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 12
_PIN = re.compile(rf"^[0-9]{{{PIN_MIN_DIGITS},{PIN_MAX_DIGITS}}}$")


def is_pin(text: str) -> bool:
    return _PIN.match(text) is not None

_B64URL = r"[A-Za-z0-9_-]"
_JWT = re.compile(rf"^{_B64URL}+\.{_B64URL}+\.{_B64URL}*$")
_INVITE = re.compile(rf"^vis_{_B64URL}{{16,64}}$")
_DIGITAL_ID_TOKEN = re.compile(rf"^{_B64URL}{{8,512}}$")
_HEX = re.compile(r"^[0-9A-F]{4,40}$")
_HEX_GROUPS = re.compile(r"^[0-9A-F]{2,4}(?:([:\- ])[0-9A-F]{2,4})+$")
_FACILITY_CARD = re.compile(r"^([0-9]{1,7}):([0-9]{1,12})$")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse(raw: bytes, hint: str | None = None) -> Credential:
    """`hint` is what the input already knows: "card" (a hardware-read number), "pin" (keypad)."""
    if len(raw) > MAX_SCAN_BYTES:
        return Malformed(f"longer than {MAX_SCAN_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Malformed("not valid UTF-8")
    # Scanners end a line with CR and/or LF; anything else that is a control character is not
    # something a person or a tag meant to send.
    text = text.strip(" \r\n")
    if not text:
        return Malformed("empty")
    if _ASCII_CONTROL.search(text) if text.isascii() else any(unicodedata.category(c)[0] == "C" for c in text):
        return Malformed("control or unassigned characters")
    if hint == "pin":
        return Pin(text) if _PIN.match(text) else Malformed(f"keypad entry is not {PIN_MIN_DIGITS}-{PIN_MAX_DIGITS} digits")
    if hint == "card":
        return normalise_card(text)
    return _parse_text(text)


def _parse_text(text: str) -> Credential:
    if text.startswith("eyJ") and _JWT.match(text):
        header = jwt_header(text)
        return CredentialJwt(text, header=header) if header is not None else Malformed("JWT header is not JSON")
    if text.startswith("vis_"):
        return InviteCode(text) if _INVITE.match(text) else Malformed("invite code has the wrong shape")
    lowered = text[:8].lower()
    if lowered.startswith("https://") or lowered.startswith("http://"):
        return _parse_url(text)
    if text.endswith("#") and _PIN.match(text[:-1]):
        # A keyboard-wedge keypad types the PIN and then '#', as a Wiegand keypad does.
        return Pin(text[:-1])
    return normalise_card(text)


def jwt_header(token: str) -> dict | None:
    """The JOSE header if it is a JSON object with an `alg`, else None. Unverified: it only
    tells the verifier which key to try."""
    head = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):  # a QR code can nest `[[[[…` deeply
        return None
    return decoded if isinstance(decoded, dict) and isinstance(decoded.get("alg"), str) else None


def _parse_url(text: str) -> Credential:
    try:
        parts = urlsplit(text)
    except ValueError:
        return Malformed("URL does not parse")
    path = parts.path
    if path.endswith("/verify.php") or path.endswith("/verify-token.php"):
        tokens = parse_qs(parts.query).get("token", [])
        if len(tokens) == 1 and _DIGITAL_ID_TOKEN.match(tokens[0]):
            return DigitalIdToken(tokens[0])
        return Malformed("Digital ID URL without a valid token parameter")
    # Frontelio's visitor magic link: https://app.frontelio.com/visitor/vis_…
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if "/visitor/" in path and _INVITE.match(last):
        return InviteCode(last)
    return Malformed("URL is not a known credential link")


def normalise_card(text: str) -> Credential:
    """One spelling per card: upper-case hex without separators, or `facility:card` decimal.

    SNA numbers (`6B06C2A25E99C68EDCBE`), NFC UIDs printed as `04:a2:2c:…` and decimal Sifely
    card numbers all land on the same form whether they come from a scanner, a tag or a bundle.
    """
    t = text.strip().upper()
    if t.startswith("0X"):
        t = t[2:]
    if m := _FACILITY_CARD.match(t):
        return CardNumber(f"{int(m.group(1))}:{int(m.group(2))}")
    if m := _HEX_GROUPS.match(t):
        sep = m.group(1)
        if all(len(g) in (2, 4) for g in t.split(sep)):
            t = t.replace(sep, "")
    if _HEX.match(t):
        return CardNumber(t)
    return Malformed("not a recognised card number, token or code")


def card_key(number: str) -> str | None:
    """Normalise a card number taken from a bundle; None if it is not a card number."""
    result = normalise_card(number)
    return result.number if isinstance(result, CardNumber) else None
