"""What was presented, and how: the `source` of a decision (Frontelio's `source` field).

A reader knows only how it read (an NFC field, a camera or wedge scanner, a card reader's wire, a
keypad); the credential kind says what was presented. Frontelio's sources describe both, so the
source is derived from the pair, in one place, for the journal, the audit row and the wire:

| reader reads by \\ credential | card number | credential JWT   | visitor JWT / `vis_…` code | Digital ID token | PIN    |
| --- | --- | --- | --- | --- | --- |
| NFC (NDEF)                    | CARD        | PHONE_NFC        | VISITOR                     | PHONE_NFC        | KEYPAD |
| QR / barcode / wedge / serial | CARD        | PHONE_QR         | VISITOR                     | PHONE_QR         | KEYPAD |
| card reader (Wiegand, NFC UID)| CARD        | PHONE_NFC¹       | VISITOR                     | PHONE_QR¹        | KEYPAD |
| keypad                        | CARD        | PHONE_QR¹        | VISITOR                     | PHONE_QR¹        | KEYPAD |

¹ not produced by real hardware (a card reader only yields numbers, a keypad only digits); the
row is total so that no pair is left undefined. A malformed scan keeps the reader's own source.
"""

from __future__ import annotations

import base64
import json

from verifier.types import CardNumber, Credential, CredentialJwt, DigitalIdToken, InviteCode, Malformed, Pin, Source

# An input's `Scan.source` says how it read. These are the values inputs use for each channel.
READ_BY_NFC = Source.PHONE_NFC
READ_BY_OPTICAL = Source.PHONE_QR
READ_BY_CARD_READER = Source.CARD
READ_BY_KEYPAD = Source.KEYPAD

_PAYLOAD_CAP = 4096


def presented_source(credential: Credential, read_by: Source) -> Source:
    """The source of a decision: credential kind × how the reader read it (table above)."""
    match credential:
        case CardNumber():
            return Source.CARD
        case Pin():
            return Source.KEYPAD
        case InviteCode():
            return Source.VISITOR
        case CredentialJwt(token=token):
            if is_visitor_jwt(token):
                return Source.VISITOR
            return Source.PHONE_NFC if read_by in (READ_BY_NFC, READ_BY_CARD_READER) else Source.PHONE_QR
        case DigitalIdToken():
            return Source.PHONE_NFC if read_by is READ_BY_NFC else Source.PHONE_QR
        case Malformed():
            return read_by
    return read_by


def is_visitor_jwt(token: str) -> bool:
    """A credential minted by Frontelio's visitor redeem endpoint carries the visitor's `zoneIds`
    (the claim `verifier.decide` reads for visitors). Unverified: this only labels the source;
    the signature is checked by whoever decides."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > _PAYLOAD_CAP:
        return False
    body = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(claims, dict) and "zoneIds" in claims
