"""Signed remote commands from the central: checked here, applied by the daemon.

A command is a compact JWS signed with the central's pinned Ed25519 key (`cache.public_key`,
the key that signs grant bundles; EdDSA only, so no `alg` confusion). Its claims:

    {"format": "door-bridge-command/1", "id": "cmd_42", "command": "hold_unlocked",
     "bridge": "BRIDGE-1", "door": "main", "until": "2026-06-01T12:00:00Z",
     "nonce": "b2c1…", "issued_at": "2026-06-01T10:00:00Z", "expires_at": "2026-06-01T10:05:00Z"}

`check` refuses, with a reason of its own (each one an audit event `COMMAND_REFUSED`):

| refusal | when |
| --- | --- |
| `bad_signature` | not a JWS, not EdDSA, or not signed by the pinned key (a foreign central, a tampered command, an unsigned one) |
| `malformed` | a claim missing or of the wrong type, an unknown `command`, `door` on a site-wide command or missing on a door command |
| `wrong_bridge` | `bridge` is not this bridge (mis-addressed) |
| `unknown_door` | `door` is not one of this bridge's doors |
| `expired` | `expires_at` is not after now |
| `not_yet_valid` | `issued_at` is more than `CLOCK_SKEW_MS` ahead of now |
| `lifetime_too_long` | `expires_at - issued_at` over `MAX_LIFETIME_MS` (a nonce must not have to be kept for ever) |
| `replayed` | this `nonce` was already taken (nonces are kept, on disk, until their command expires) |
| `clock_untrusted` | the bridge's clock is not trusted: it cannot tell expired from valid |
| `lockdown_in_force`, `interlocked` | (when applying) an `unlock_once` at a locked-down door, or at a mantrap door whose partner is open |

No command is ever taken from an unsigned or retained source: MQTT carries no commands at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from verifier.timeutil import TimeFormatError, parse_instant, to_ms

FORMAT = "door-bridge-command/1"
MAX_TOKEN_BYTES = 8 * 1024
MAX_LIFETIME_MS = 24 * 3600 * 1000
CLOCK_SKEW_MS = 60 * 1000


class CommandKind(StrEnum):
    UNLOCK_ONCE = "unlock_once"  # one pulse, as a GRANT would
    HOLD_UNLOCKED = "hold_unlocked"  # manual override: unlocked until `until`
    LOCK = "lock"  # manual override: locked until `until` (none: until `resume`)
    RESUME = "resume"  # end the manual override: back to the schedule
    LOCKDOWN_ON = "lockdown_on"  # site-wide, or one door with `door`
    LOCKDOWN_OFF = "lockdown_off"
    ANTIPASSBACK_FORGIVE = "antipassback_forgive"  # `area` (absent: every area)


_NEEDS_DOOR = frozenset({CommandKind.UNLOCK_ONCE, CommandKind.HOLD_UNLOCKED, CommandKind.LOCK, CommandKind.RESUME})
_NO_DOOR = frozenset({CommandKind.ANTIPASSBACK_FORGIVE})


class Refusal(StrEnum):
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"
    WRONG_BRIDGE = "wrong_bridge"
    UNKNOWN_DOOR = "unknown_door"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"
    CLOCK_UNTRUSTED = "clock_untrusted"
    # Found when applying, not when checking: a signed, valid command the precedence forbids.
    LOCKDOWN_IN_FORCE = "lockdown_in_force"
    INTERLOCKED = "interlocked"  # unlock_once at a mantrap door whose partner is open or unlocked


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    kind: CommandKind
    bridge: str
    door: str | None
    nonce: str
    issued_at_ms: int
    expires_at_ms: int
    until_ms: int | None = None
    area: str | None = None

    def as_wire(self) -> dict[str, Any]:
        return {"commandId": self.id, "command": self.kind.value, "door": self.door, "nonce": self.nonce,
                "untilMs": self.until_ms, "area": self.area, "expiresAtMs": self.expires_at_ms}


@dataclass(frozen=True, slots=True)
class Checked:
    """`command` when accepted; else `refusal` and `detail` (safe to log: no token, no key)."""

    command: Command | None
    refusal: Refusal | None = None
    detail: str = ""
    # What could be read of a refused command (for the audit event), claims unverified or not.
    claims: dict[str, Any] | None = None


def check(token: str, public_key: Ed25519PublicKey, *, bridge_id: str, doors: frozenset[str], now_ms: int,
          nonce_seen: Callable[[str], bool], clock_trusted: bool = True) -> Checked:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        return Checked(None, Refusal.MALFORMED, "not a token string of at most 8 KiB")
    try:
        claims = jwt.decode(token, public_key, algorithms=["EdDSA"],
                            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False})
    except jwt.InvalidSignatureError:
        return Checked(None, Refusal.BAD_SIGNATURE, "signature does not verify with the pinned key (foreign or tampered)",
                       _unverified(token))
    except jwt.InvalidTokenError as e:
        return Checked(None, Refusal.BAD_SIGNATURE, f"not an EdDSA-signed JWS: {type(e).__name__}", _unverified(token))
    seen = _safe(claims)
    try:
        command = _parse(claims)
    except (KeyError, ValueError, TypeError, TimeFormatError) as e:
        return Checked(None, Refusal.MALFORMED, str(e)[:200], seen)
    if command.bridge != bridge_id:
        return Checked(None, Refusal.WRONG_BRIDGE, f"addressed to {command.bridge[:64]!r}, this is {bridge_id!r}", seen)
    if command.door is not None and command.door not in doors:
        return Checked(None, Refusal.UNKNOWN_DOOR, f"no door {command.door[:64]!r} on this bridge", seen)
    if not clock_trusted:
        return Checked(None, Refusal.CLOCK_UNTRUSTED, "the clock is not trusted: expiry cannot be judged", seen)
    if command.expires_at_ms - command.issued_at_ms > MAX_LIFETIME_MS:
        return Checked(None, Refusal.LIFETIME_TOO_LONG, "expires_at more than 24 h after issued_at", seen)
    if now_ms >= command.expires_at_ms:
        return Checked(None, Refusal.EXPIRED, "expires_at has passed", seen)
    if command.issued_at_ms > now_ms + CLOCK_SKEW_MS:
        return Checked(None, Refusal.NOT_YET_VALID, "issued_at is in the future", seen)
    if nonce_seen(command.nonce):
        return Checked(None, Refusal.REPLAYED, "this nonce was already used", seen)
    return Checked(command, claims=seen)


def _parse(c: dict[str, Any]) -> Command:
    if c.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT}")
    kind = CommandKind(c["command"])
    door = c.get("door")
    if door is not None and not (isinstance(door, str) and 0 < len(door) <= 128):
        raise ValueError("door must be a door name")
    if kind in _NEEDS_DOOR and door is None:
        raise ValueError(f"{kind.value} needs a door")
    if kind in _NO_DOOR and door is not None:
        raise ValueError(f"{kind.value} takes no door")
    for key in ("id", "bridge", "nonce"):
        if not (isinstance(c.get(key), str) and 0 < len(c[key]) <= 256):
            raise ValueError(f"{key} must be a non-empty string")
    if len(c["nonce"]) < 16:
        raise ValueError("nonce must be at least 16 characters (random)")
    until = c.get("until")
    if kind is CommandKind.HOLD_UNLOCKED and until is None:
        raise ValueError("hold_unlocked needs until")
    area = c.get("area")
    if area is not None and not (isinstance(area, str) and 0 < len(area) <= 128):
        raise ValueError("area must be an area name")
    return Command(
        id=c["id"], kind=kind, bridge=c["bridge"], door=door, nonce=c["nonce"],
        issued_at_ms=to_ms(parse_instant(c["issued_at"], "issued_at")),
        expires_at_ms=to_ms(parse_instant(c["expires_at"], "expires_at")),
        until_ms=to_ms(parse_instant(until, "until")) if until is not None else None, area=area)


def _safe(claims: dict[str, Any]) -> dict[str, Any]:
    """The identifying claims only, shortened: a refused command is audited by what it says it is."""
    return {k: str(claims[k])[:128] for k in ("id", "command", "bridge", "door", "nonce") if k in claims}


def _unverified(token: str) -> dict[str, Any] | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return _safe(claims) if isinstance(claims, dict) else None


def sign(claims: dict[str, Any], private_key: Any) -> str:
    """For a central (and tests): the compact JWS of a command."""
    return jwt.encode({"format": FORMAT, **claims}, private_key, algorithm="EdDSA")
