"""Credential fingerprints: HMAC-SHA256 under the bridge's key, stable across versions."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from verifier.credentials import parse
from verifier.types import fingerprint, secret_of


@pytest.mark.parametrize("scan", [b"6B06C2A25E99C68EDCBE", b"1234#", b"vis_" + b"a" * 32, b"\x00garbage\xff"])
def test_a_fingerprint_is_the_first_16_hex_of_hmac_sha256_of_kind_and_secret(scan: bytes) -> None:
    """The definition audit rows and journals of earlier versions were written with: a faster
    way to compute it must give the same tags, or replays and repeats stop linking on upgrade."""
    key = os.urandom(32)
    credential = parse(scan)
    expected = hmac.new(key, f"{credential.kind}:{secret_of(credential)}".encode(), hashlib.sha256).hexdigest()[:16]
    assert fingerprint(credential, key) == f"{credential.kind}:{expected}"


def test_another_key_gives_another_tag_and_the_same_key_the_same() -> None:
    card = parse(b"6B06C2A25E99C68EDCBE")
    a, b = os.urandom(32), os.urandom(32)
    assert fingerprint(card, a) == fingerprint(card, a) != fingerprint(card, b)
    assert fingerprint(card, bytes(a)) == fingerprint(parse(b"6B06C2A25E99C68EDCBE"), a)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        fingerprint(parse(b"6B06C2A25E99C68EDCBE"), b"short")
