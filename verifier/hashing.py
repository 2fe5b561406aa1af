"""Secrets at rest: what the cache stores instead of PINs and invite codes.

A PIN has at most 10^12 (usually 10^4–10^6) values, so any fast hash of it is reversed in
seconds from a stolen SD card. PINs are therefore hashed with scrypt under a per-bundle salt:
deliberately slow (tens of ms) — acceptable once per keypad entry, expensive per guess offline.
Invite codes carry 192 bits of entropy (Frontelio), so SHA-256 is enough and keeps look-ups fast.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PinHashing:
    salt: bytes
    n: int = 2**13  # ~30 ms on a laptop core, ~200 ms on a Pi Zero 2 W
    r: int = 8
    p: int = 1

    def to_claim(self) -> dict[str, object]:
        return {"alg": "scrypt", "n": self.n, "r": self.r, "p": self.p,
                "salt": base64.urlsafe_b64encode(self.salt).decode().rstrip("=")}

    @classmethod
    def from_claim(cls, claim: object) -> "PinHashing":
        if not isinstance(claim, dict) or claim.get("alg") != "scrypt":
            raise ValueError("pin_hash must be {alg: scrypt, n, r, p, salt}")
        n, r, p, salt = claim.get("n"), claim.get("r"), claim.get("p"), claim.get("salt")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)) or not isinstance(salt, str):
            raise ValueError("pin_hash parameters have the wrong types")
        if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 4):
            raise ValueError("pin_hash parameters are out of range")
        raw = base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4))
        if len(raw) < 16:
            raise ValueError("pin_hash salt is shorter than 16 bytes")
        return cls(raw, n, r, p)


def hash_pin(pin: str, params: PinHashing) -> str:
    digest = hashlib.scrypt(pin.encode(), salt=params.salt, n=params.n, r=params.r, p=params.p,
                            maxmem=256 * 1024 * 1024, dklen=16)
    return digest.hex()


def hash_invite(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
