"""Shared test helpers for the verifier core: keys, a small record set, bundles, a fresh cache.

Everything here builds REAL parts: Ed25519/EC keys from `cryptography`, bundles signed by the real
`BundleWriter`, caches that are real SQLite files under pytest's `tmp_path`. Keys are generated
once per test session (key generation is the slow part, and tests only need them to differ from
each other, not from run to run).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    EllipticCurvePrivateKey,
    generate_private_key,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from verifier.bundle import ApplyResult, BundleWriter, apply_bundle
from verifier.cache import GrantCache
from verifier.hashing import PinHashing, hash_pin

# --- the clock and the doors ---------------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

READER = "BRIDGE-dxb1-stockroom"  # zone_stock (not schedule-aware)
SHIFT_READER = "BRIDGE-dxb1-kitchen"  # zone_kitchen (schedule-aware)
DEVICE_READER = "hotel-door-101"  # known only from cards'/passcodes' `devices`, in no zone

# --- keys ----------------------------------------------------------------------------------------

SIGNING_KEY = Ed25519PrivateKey.generate()  # the central's bundle key (pinned in config)
FOREIGN_KEY = Ed25519PrivateKey.generate()  # another central's
OKP_KEY = Ed25519PrivateKey.generate()  # signs EdDSA credential JWTs
EC_KEY: EllipticCurvePrivateKey = generate_private_key(SECP256R1())  # signs ES256 credential JWTs
HS_SECRET = os.urandom(32)  # a site that opted into HS256
OKP_KID, EC_KID, HS_KID = "okp-1", "ec-1", "hs-1"

# n=2**10 is the smallest cost the manifest accepts: keeps each keypad decision ~1 ms in tests.
PIN_HASHING = PinHashing(os.urandom(16), n=2**10)

# --- credentials the record set knows ------------------------------------------------------------

USER_CARD = "6B06C2A25E99C68EDCBE"  # SNA-shaped number, linked to user_layla (zone grants apply)
DEVICE_CARD = "04A22C1A7B3F80"  # SNA card bound to DEVICE_READER and READER by `devices`
IC_CARD = "3054721"  # Sifely ic_card (decimal number), bound to READER
REVOKED_CARD = "0A1B2C3D"  # user_omar: his only grant is revoked
INACTIVE_CARD = "DEADBEEF01"  # user_ex: inactive holder
SHIFT_CARD = "C0FFEE0001"  # user_cook: grant on the schedule-aware kitchen
INVITE = "vis_a3F2X1bCq9Zr7TmW4yKd8PLs"
PIN = "90817263"  # long enough that its digits cannot turn up in a hex digest by chance


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jwk_okp(key: Ed25519PrivateKey = OKP_KEY) -> dict[str, Any]:
    return json.loads(OKPAlgorithm.to_jwk(key.public_key()))


def jwk_ec(key: EllipticCurvePrivateKey = EC_KEY) -> dict[str, Any]:
    return json.loads(ECAlgorithm.to_jwk(key.public_key()))


def jwk_oct(secret: bytes = HS_SECRET) -> dict[str, Any]:
    return json.loads(jwt.algorithms.HMACAlgorithm.to_jwk(secret))


def records(now: datetime = NOW) -> list[dict[str, Any]]:
    """A small site: two zones, five people, one of each credential kind, three JWT keys."""
    return [
        {"type": "zone", "id": "zone_stock", "name": "Back of House — Stockroom", "readers": [READER]},
        {"type": "zone", "id": "zone_kitchen", "name": "Kitchen", "readers": [SHIFT_READER], "scheduleAware": True},
        {"type": "user", "id": "user_layla", "name": "Layla Hassan", "active": True},
        {"type": "user", "id": "user_omar", "name": "Omar Said", "active": True},
        {"type": "user", "id": "user_ex", "name": "Former Employee", "active": False},
        {"type": "user", "id": "user_cook", "name": "Chef Karim", "active": True},
        {"type": "grant", "id": "g_layla", "userId": "user_layla", "zoneId": "zone_stock",
         "startsAt": iso(now - 30 * DAY), "endsAt": iso(now + 180 * DAY)},
        {"type": "grant", "id": "g_omar", "userId": "user_omar", "zoneId": "zone_stock", "revoked": True},
        {"type": "grant", "id": "g_ex", "userId": "user_ex", "zoneId": "zone_stock"},
        {"type": "grant", "id": "g_cook", "userId": "user_cook", "zoneId": "zone_kitchen"},
        {"type": "shift", "id": "s_cook", "userId": "user_cook", "zoneId": "zone_kitchen",
         "startsAt": iso(now - timedelta(hours=2)), "endsAt": iso(now + timedelta(hours=6))},
        {"type": "card", "number": USER_CARD, "name": "Layla's card", "userId": "user_layla"},
        {"type": "card", "number": REVOKED_CARD, "name": "Omar's card", "userId": "user_omar"},
        {"type": "card", "number": INACTIVE_CARD, "name": "Badge", "userId": "user_ex"},
        {"type": "card", "number": SHIFT_CARD, "name": "Karim's card", "userId": "user_cook"},
        {"type": "card", "number": DEVICE_CARD, "name": "Guest Card", "devices": [DEVICE_READER, READER],
         "start_at": iso(now - DAY), "end_at": iso(now + 6 * DAY)},
        {"type": "ic_card", "cardNumber": IC_CARD, "cardName": "Room 7 card", "devices": [READER],
         "startDate": int((now - DAY).timestamp() * 1000), "endDate": int((now + DAY).timestamp() * 1000)},
        {"type": "visitor", "id": "v_ahmed", "inviteCode": INVITE, "displayName": "ACME Pest Control — Ahmed",
         "zoneIds": ["zone_stock"], "validFrom": iso(now - timedelta(hours=1)), "validUntil": iso(now + timedelta(hours=3))},
        {"type": "passcode", "id": "pwd_101", "keyboardPwdHash": hash_pin(PIN, PIN_HASHING),
         "keyboardPwdName": "Guest 101", "devices": [READER], "startDate": iso(now - DAY), "endDate": iso(now + 2 * DAY)},
        {"type": "key", "kid": OKP_KID, "jwk": jwk_okp()},
        {"type": "key", "kid": EC_KID, "jwk": jwk_ec()},
        {"type": "key", "kid": HS_KID, "jwk": jwk_oct()},
    ]


def make_bundle(recs: Iterable[dict[str, Any]], *, version: int = 1, kind: str = "full",
                base_version: int | None = None, key: Ed25519PrivateKey = SIGNING_KEY,
                issued_at: datetime = NOW, not_after: datetime = NOW + 7 * DAY,
                pin_hashing: PinHashing | None = PIN_HASHING) -> bytes:
    """A signed bundle (manifest line + NDJSON body) exactly as a central would send it."""
    writer = BundleWriter(version=version, kind=kind, base_version=base_version, issued_at=issued_at,
                          not_after=not_after, pin_hashing=pin_hashing)
    writer.add_all(recs)
    out = io.BytesIO()
    writer.finish(key, out)
    return out.getvalue()


def fresh_cache(tmp_path: Path) -> GrantCache:
    """An empty grant cache in a real SQLite file (WAL, migrated)."""
    return GrantCache(tmp_path / "grants.db")


def apply(cache: GrantCache, bundle: bytes) -> ApplyResult:
    """Apply through the cache's own connection, as the daemon's sync does, and let it re-read."""
    try:
        return apply_bundle(cache.conn, io.BytesIO(bundle), SIGNING_KEY.public_key())
    finally:
        cache.invalidate()
        cache.refresh()


def loaded_cache(tmp_path: Path, recs: Iterable[dict[str, Any]] | None = None, **manifest: Any) -> GrantCache:
    """A cache holding `recs` (default: `records()`) from one full bundle."""
    cache = fresh_cache(tmp_path)
    apply(cache, make_bundle(records() if recs is None else recs, **manifest))
    return cache


def make_jwt(claims: dict[str, Any], *, alg: str = "EdDSA", kid: str | None = None, with_kid: bool = True,
             key: Any = None) -> str:
    """A credential JWT; the key and kid default to the ones in `records()` matching `alg`."""
    if key is None:
        key = {"EdDSA": OKP_KEY, "ES256": EC_KEY, "HS256": HS_SECRET}[alg]
    kid = kid or {"EdDSA": OKP_KID, "ES256": EC_KID, "HS256": HS_KID}.get(alg)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if with_kid else None)


def user_claims(now: datetime = NOW, **extra: Any) -> dict[str, Any]:
    """A Frontelio 24 h credential for user_layla, issued an hour ago."""
    issued = int((now - timedelta(hours=1)).timestamp())
    return {"sub": "user_layla", "name": "Layla Hassan", "iat": issued, "exp": issued + 24 * 3600, **extra}
