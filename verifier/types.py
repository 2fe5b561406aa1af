"""Domain values shared by the verifier and the daemon.

Enum members are spelled exactly as the Frontelio `/access` document spells them, so a value can
go on the wire, into the audit log and into a journal line without translation.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Union


class Decision(StrEnum):
    GRANT = "GRANT"
    DENY = "DENY"


class Reason(StrEnum):
    # The Frontelio set, as returned by POST /access/verify.
    NO_GRANT = "NO_GRANT"
    GRANT_REVOKED = "GRANT_REVOKED"
    OUT_OF_SHIFT_WINDOW = "OUT_OF_SHIFT_WINDOW"
    OUT_OF_DATE_WINDOW = "OUT_OF_DATE_WINDOW"
    CREDENTIAL_EXPIRED = "CREDENTIAL_EXPIRED"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    UNKNOWN_READER = "UNKNOWN_READER"
    RATE_LIMITED = "RATE_LIMITED"
    # What the edge needs on top.
    MALFORMED_CREDENTIAL = "MALFORMED_CREDENTIAL"
    HOLDER_INACTIVE = "HOLDER_INACTIVE"
    CACHE_STALE = "CACHE_STALE"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    # Door modes (verifier/door_mode.py): the credential may be fine, the door asks for another.
    PIN_REQUIRED = "PIN_REQUIRED"  # a card at a card-and-pin door (PIN to follow) or a pin-only door
    CARD_REQUIRED = "CARD_REQUIRED"  # a PIN at a card-only door, or at card-and-pin with no card first
    PIN_MISMATCH = "PIN_MISMATCH"  # card-and-pin: the PIN is not the card holder's own
    PIN_TIMEOUT = "PIN_TIMEOUT"  # card-and-pin: the PIN came after the pairing window
    DOOR_LOCKED = "DOOR_LOCKED"  # locked mode: only holders with an override role
    FACILITY_CODE_MISMATCH = "FACILITY_CODE_MISMATCH"  # facility-code mode: not one of the site's codes
    OUT_OF_SCHEDULE = "OUT_OF_SCHEDULE"  # the grant's weekly schedule is closed now
    # Emergencies and door rules (verifier/emergency.py, antipassback.py, two_person.py, interlock.py).
    LOCKDOWN = "LOCKDOWN"  # a lockdown is in force: only lockdown-override holders pass
    ANTIPASSBACK = "ANTIPASSBACK"  # hard or timed anti-passback: this holder's last pass does not allow this one
    TWO_PERSON_PENDING = "TWO_PERSON_PENDING"  # two-person door: waiting for a second, different holder
    INTERLOCK = "INTERLOCK"  # mantrap: the other door of the pair is open or unlocked


class Source(StrEnum):
    """Where a credential came from; the first four are Frontelio's `source` values."""

    PHONE_NFC = "PHONE_NFC"
    PHONE_QR = "PHONE_QR"
    VISITOR = "VISITOR"
    CARD = "CARD"
    # Ours: a code typed on a keypad (PIN or offline passcode). Sent upstream as CARD is wrong,
    # so adapters that only know the Frontelio four map it explicitly.
    KEYPAD = "KEYPAD"


# --- credentials -------------------------------------------------------------------------------
# One frozen value per kind of credential. The raw secret is kept (the verifier needs it) but is
# never rendered: `repr` is suppressed and logs use `fingerprint()` (a keyed MAC).


@dataclass(frozen=True, slots=True)
class CardNumber:
    """A card number, NFC UID or Wiegand number, normalised (upper-case, no separators)."""

    number: str = field(repr=False)
    kind: str = "card"


@dataclass(frozen=True, slots=True)
class CredentialJwt:
    """A Frontelio credential JWT (24 h user credential or visitor credential).

    `header` is the JOSE header the parser already decoded to classify the text: the verifier
    picks the key from it instead of decoding it a second time. Unverified, like every header;
    PyJWT reads the token's own and refuses an `alg` other than the one picked. Not part of
    equality: the token is the credential."""

    token: str = field(repr=False)
    kind: str = "jwt"
    header: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class DigitalIdToken:
    """The `token` parameter of a Digital ID `verify.php?token=` QR URL: checkable only online."""

    token: str = field(repr=False)
    kind: str = "digital_id"


@dataclass(frozen=True, slots=True)
class InviteCode:
    """A Frontelio visitor invite code (`vis_…`)."""

    code: str = field(repr=False)
    kind: str = "invite"


@dataclass(frozen=True, slots=True)
class Pin:
    """Digits typed on a keypad: a stored PIN/passcode, or an offline passcode."""

    digits: str = field(repr=False)
    kind: str = "pin"


@dataclass(frozen=True, slots=True)
class Malformed:
    """Anything that is not a credential. `why` is safe to log: it never quotes the input."""

    why: str
    kind: str = "malformed"


Credential = Union[CardNumber, CredentialJwt, DigitalIdToken, InviteCode, Pin, Malformed]


def secret_of(credential: Credential) -> str:
    """The credential's secret value (for hashing and upstream calls, never for logs)."""
    match credential:
        case CardNumber(number=v) | CredentialJwt(token=v) | DigitalIdToken(token=v):
            return v
        case InviteCode(code=v) | Pin(digits=v):
            return v
        case Malformed(why=v):
            return "malformed:" + v
    raise TypeError(f"not a credential: {type(credential).__name__}")


def fingerprint(credential: Credential, key: bytes) -> str:
    """A short tag that links repeats of one credential at one bridge, and nothing more.

    HMAC-SHA256 under the bridge's own secret key (`state_dir/fingerprint.key`, never logged or
    sent anywhere): without the key the tag cannot be tested against guesses, so a journal or an
    audit row no longer gives away a PIN or card number (a plain hash of a 4-digit PIN falls to
    10,000 tries). With the same key the same credential always gives the same tag, which is
    what replay memory, the journal and the audit rows need. Another bridge's key gives another
    tag: fingerprints do not link one person across bridges (docs/operations.md).
    """
    mac = _keyed_mac(key).copy()
    mac.update(f"{credential.kind}:{secret_of(credential)}".encode())
    return f"{credential.kind}:{mac.hexdigest()[:16]}"


@functools.lru_cache(maxsize=4)
def _keyed_mac(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 keyed once, copied per credential (every decision fingerprints one).

    The constructor given as `digestmod` makes the hmac module build the MAC from two SHA-256
    states it keys here once (RFC 2104's inner and outer pads); `copy()` then costs two state
    copies. With `hashlib.sha256` or "sha256" it would use OpenSSL 3's HMAC instead, which looks
    its algorithm up on every call: 5-7 µs per fingerprint against 1.5 µs, the same bytes
    (tests/unit/test_fingerprint.py)."""
    if len(key) < 16:
        raise ValueError("the fingerprint key must be at least 16 bytes")
    return hmac.new(key, digestmod=_sha256)


def _sha256(data: bytes = b"") -> hashlib._Hash:
    return hashlib.sha256(data)


# --- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnlineTerms:
    """What an upstream's answer says about how long (and where) its GRANT holds.

    Filled by adapters whose answer carries it (SNA's `card`: `start_at`/`end_at`, `devices`);
    the learned offline cache keeps it so an offline decision follows the same window and device
    rules as the online one. Milliseconds since the epoch, UTC; None = the answer says nothing.
    """

    starts_ms: int | None = None
    ends_ms: int | None = None
    devices: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class AccessDecision:
    """What the door does, and why. Field names map 1:1 onto Frontelio's verify/audit JSON."""

    decision: Decision
    reason: Reason | None
    reader_id: str
    source: Source
    user_id: str | None = None
    user_name: str | None = None
    zone_id: str | None = None
    zone_name: str | None = None
    replay: bool = False
    cache_version: int = 0
    online: bool = False
    credential_kind: str = "unknown"
    fingerprint: str = ""
    # True when the learned offline cache answered (a GRANT the central gave this credential
    # before, replayed while it is unreachable); see bridge/state/learned.py.
    learned: bool = False
    terms: OnlineTerms | None = field(default=None, repr=False, compare=False)
    # The central's own reason word when it is not one of ours (kept for the audit record), or
    # what a late denial said; None when `reason` is the central's word exactly.
    upstream_reason: str | None = None
    door_mode: str | None = None  # the effective door mode the decision was taken in (door_mode.py)
    # The PIN was the holder's duress PIN (verifier/duress.py): the door does exactly what it would
    # for the normal PIN; only the DURESS alarm event says otherwise. Never on the wire of VERIFY.
    duress: bool = field(default=False, compare=False)

    @property
    def granted(self) -> bool:
        return self.decision is Decision.GRANT

    @property
    def decided(self) -> str:
        """Where the answer came from: `online` (the central now), `learned` (the central
        before, remembered), `cache` (the signed grant cache or the door's own rules)."""
        return "online" if self.online else "learned" if self.learned else "cache"

    def as_wire(self) -> dict[str, Any]:
        """Frontelio's spelling (`userId`, `zoneName`, …) plus our edge fields."""
        wire = {
            "decision": self.decision.value,
            "reason": self.reason.value if self.reason else None,
            "userId": self.user_id,
            "userName": self.user_name,
            "zoneId": self.zone_id,
            "zoneName": self.zone_name,
            "readerId": self.reader_id,
            "source": self.source.value,
            "replay": self.replay,
            "cacheVersion": self.cache_version,
            "online": self.online,
            "decided": self.decided,
            "credentialKind": self.credential_kind,
            "credentialFingerprint": self.fingerprint,
            "doorMode": self.door_mode,
        }
        if self.upstream_reason is not None:
            wire["upstreamReason"] = self.upstream_reason
        return wire
