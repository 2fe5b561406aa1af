"""Door modes × credential kinds in the core (real signed bundle, real SQLite cache, Verifier with
modes): the table docs/door-modes.md prints, asserted cell by cell. Each credential below is valid
on its own (a GRANT at a card-or-pin door), except the unknown facility-code card.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.builders import OKP_KEY, OKP_KID, iso, jwk_okp
from verifier.bundle import apply_bundle, bundle_bytes
from verifier.cache import GrantCache
from verifier.credentials import parse
from verifier.decide import Verifier
from verifier.door_mode import Mode, ModeSettings
from verifier.hashing import PinHashing, hash_pin
from verifier.types import Source

NOW = datetime(2026, 6, 1, 10, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
PIN_HASHING = PinHashing(os.urandom(16), n=2**10)
R = "DOOR-R"
CARD, PIN, FACILITY_CARD, GUARD_CARD = "6B06C2A25E99C68EDCBE", "4711", "12:34567", "0A0B0C0D"
INVITE = "vis_a3F2X1bCq9Zr7TmW4yKd8PLs"


def _records(mode: str) -> list[dict]:
    far = {"startsAt": iso(NOW - timedelta(days=1)), "endsAt": iso(NOW + timedelta(days=1))}
    return [
        {"type": "zone", "id": "z", "name": "Door", "readers": [R]},
        {"type": "role", "id": "security", "override": True},
        {"type": "user", "id": "u", "name": "Layla"},
        {"type": "user", "id": "guard", "name": "Guard", "roles": ["security"]},
        {"type": "grant", "id": "g", "userId": "u", "zoneId": "z", **far},
        {"type": "grant", "id": "g2", "userId": "guard", "zoneId": "z", **far},
        {"type": "card", "number": CARD, "userId": "u"},
        {"type": "card", "number": GUARD_CARD, "userId": "guard"},
        {"type": "passcode", "id": "p", "keyboardPwdHash": hash_pin(PIN, PIN_HASHING), "userId": "u", "devices": [R]},
        {"type": "visitor", "inviteCode": INVITE, "zoneIds": ["z"], "validUntil": iso(NOW + timedelta(days=1))},
        {"type": "key", "kid": OKP_KID, "jwk": jwk_okp()},
        {"type": "door_mode", "id": "d", "readers": [R], "mode": mode, "facilityCodes": [12]},
    ]


def _verifier(tmp_path: Path, mode: str, pin_timeout_s: float = 10.0) -> Verifier:
    cache = GrantCache(tmp_path / f"{mode}-{len(list(tmp_path.iterdir()))}.db")
    apply_bundle(cache.conn, io.BytesIO(bundle_bytes(_records(mode), KEY, version=1, issued_at=NOW - timedelta(hours=1),
                                                     not_after=NOW + timedelta(days=1), pin_hashing=PIN_HASHING)),
                 KEY.public_key())
    cache.invalidate()
    return Verifier(cache, modes=ModeSettings(pin_timeout_s=pin_timeout_s))


def _phone() -> str:
    return jwt.encode({"sub": "u", "exp": int((NOW + timedelta(hours=1)).timestamp())}, OKP_KEY, algorithm="EdDSA",
                      headers={"kid": OKP_KID})


CREDENTIALS = {"card": (CARD, "card"), "pin": (PIN, "pin"), "phone": (None, None), "visitor": (INVITE, None),
               "facility card": (FACILITY_CARD, "card")}
G, D = "GRANT", "DENY"
# mode → what each credential kind gets (reason for a DENY). card-and-pin's PIN row is the PIN
# alone; the pairing is its own test.
TABLE = {
    "card-only": {"card": G, "pin": "CARD_REQUIRED", "phone": G, "visitor": G, "facility card": "NO_GRANT"},
    "card-and-pin": {"card": "PIN_REQUIRED", "pin": "CARD_REQUIRED", "phone": "PIN_REQUIRED",
                     "visitor": "PIN_REQUIRED", "facility card": "NO_GRANT"},
    "card-or-pin": {"card": G, "pin": G, "phone": G, "visitor": G, "facility card": "NO_GRANT"},
    "pin-only": {"card": "PIN_REQUIRED", "pin": G, "phone": "PIN_REQUIRED", "visitor": "PIN_REQUIRED", "facility card": "PIN_REQUIRED"},
    "facility-code": {"card": G, "pin": G, "phone": G, "visitor": G, "facility card": G},
    "unlocked": {"card": G, "pin": G, "phone": G, "visitor": G, "facility card": "NO_GRANT"},
    "locked": {"card": "DOOR_LOCKED", "pin": "DOOR_LOCKED", "phone": "DOOR_LOCKED", "visitor": "DOOR_LOCKED",
               "facility card": "DOOR_LOCKED"},
}


@pytest.mark.parametrize("mode", list(TABLE))
def test_modes_by_credential_kind(tmp_path: Path, mode: str) -> None:
    got = {}
    for kind, (raw, hint) in CREDENTIALS.items():
        v = _verifier(tmp_path, mode)  # each credential at a fresh door: no pairing left by another
        text = raw if raw is not None else _phone()
        d = v.decide(parse(text.encode(), hint), R, Source.CARD, NOW)
        assert d.door_mode == mode
        got[kind] = d.decision.value if d.granted else d.reason.value
    assert got == TABLE[mode]


def test_a_visitor_pass_at_a_card_and_pin_door_has_no_holder_to_pair_with(tmp_path: Path) -> None:
    # A visitor pass names no user: there is no PIN that could be "the holder's own".
    d = _verifier(tmp_path, "card-and-pin").decide(parse(INVITE.encode()), R, Source.VISITOR, NOW)
    assert d.reason.value == "PIN_REQUIRED"


def test_a_locked_door_admits_a_holder_whose_role_overrides(tmp_path: Path) -> None:
    v = _verifier(tmp_path, "locked")
    assert v.decide(parse(GUARD_CARD.encode(), "card"), R, Source.CARD, NOW).granted
    assert v.decide(parse(CARD.encode(), "card"), R, Source.CARD, NOW).reason.value == "DOOR_LOCKED"


def test_a_pin_of_another_holder_counts_as_a_guess(tmp_path: Path) -> None:
    v = _verifier(tmp_path, "card-and-pin", pin_timeout_s=60)
    v.decide(parse(GUARD_CARD.encode(), "card"), R, Source.CARD, NOW)  # the guard's card: pairing for him
    before = v.limiter.limited(R, True, 0)
    for i in range(v.policy.rate_limit_denies):
        d = v.decide(parse(PIN.encode(), "pin"), R, Source.KEYPAD, NOW + timedelta(seconds=1 + 3 * i))
        assert d.reason.value == "PIN_MISMATCH" and not d.replay
    assert not before
    assert v.decide(parse(PIN.encode(), "pin"), R, Source.KEYPAD, NOW + timedelta(seconds=30)).reason.value == "RATE_LIMITED"


@pytest.mark.parametrize("mode", [m.value for m in Mode])
def test_every_mode_is_a_valid_door_mode_record(tmp_path: Path, mode: str) -> None:
    assert _verifier(tmp_path, mode).door_modes().effective(R, 0).mode.value == mode


# --- the effective mode on the injected clock vs the reference ---------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support.schedule_cases import ZONES, cases, ref_value  # noqa: E402
from verifier.door_mode import DoorModes, DoorPolicy, FirstPersonIn  # noqa: E402
from verifier.schedule import Calendar  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(cases(), st.lists(st.booleans(), min_size=25, max_size=25), st.booleans())
def test_effective_mode_equals_the_reference_on_the_injected_clock(case, trusted, first_person_in) -> None:
    """Mode schedules only (the door record names a mode schedule); an untrusted clock never gives
    `unlocked`; with first-person-in an unlocked slot waits for its first GRANT."""
    zone, schedule, hols, instants = case
    if schedule.default is None:
        return  # an access schedule: not a door's
    policy = DoorPolicy("d", (R,), schedule_id="s", first_person_in=FirstPersonIn() if first_person_in else None)
    modes = DoorModes([policy], {"s": schedule}, ZONES[zone], Calendar(dict(hols)))
    for ms, ok in zip(instants, trusted):
        want = Mode(ref_value(schedule, hols, zone, ms))
        if want is Mode.UNLOCKED and (not ok or first_person_in):
            want = Mode(schedule.default) if schedule.default != "unlocked" else Mode.CARD_ONLY
        assert modes.effective(R, ms, ok).mode is want, (zone, ms, ok)
