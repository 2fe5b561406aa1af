"""Credential JWTs checked offline with keys from the signed cache.

The algorithm is pinned by the KEY, not by the token: an OKP key verifies only EdDSA, an EC key
only ES256, an `oct` secret only HS256, and each must also be in the configured allow-list. A
token that says `alg: HS256` to a public EC key (key confusion) or `alg: none` never reaches a
verify call. Expiry is checked against the injected clock, not the system's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jwt

from verifier.credentials import jwt_header
from verifier.types import Reason

_ALG_FOR_KTY = {"OKP": "EdDSA", "EC": "ES256", "oct": "HS256"}
MAX_TOKEN_BYTES = 4096


@dataclass(frozen=True, slots=True)
class JwtOutcome:
    claims: dict[str, Any] | None
    reason: Reason | None  # None when the token is good


_KEY_CACHE: dict[tuple[str, ...], jwt.PyJWK] = {}


def _key(kid: str, jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
    # Keyed by the key material itself, so a rotated key under the same kid is never confused.
    cache_key = (kid, alg, str(jwk.get("crv")), str(jwk.get("x")), str(jwk.get("y")), str(jwk.get("k")))
    key = _KEY_CACHE.get(cache_key)
    if key is None:
        key = jwt.PyJWK(jwk, algorithm=alg)
        if len(_KEY_CACHE) > 256:
            _KEY_CACHE.clear()
        _KEY_CACHE[cache_key] = key
    return key


def verify(token: str, jwks: dict[str, dict[str, Any]], allowed: frozenset[str], now_s: float, leeway_s: float,
           header: dict[str, Any] | None = None) -> JwtOutcome:
    """`header`: the token's header as the parser decoded it (CredentialJwt.header), else read here."""
    if len(token) > MAX_TOKEN_BYTES:
        return JwtOutcome(None, Reason.MALFORMED_CREDENTIAL)
    # The header only chooses the key; the signature check below (PyJWT) re-reads it.
    if header is None:
        header = jwt_header(token)
    if header is None:
        return JwtOutcome(None, Reason.MALFORMED_CREDENTIAL)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        return JwtOutcome(None, Reason.SIGNATURE_INVALID)
    candidates = _candidates(header, jwks)
    if len(candidates) != 1:
        return JwtOutcome(None, Reason.SIGNATURE_INVALID)
    try:
        key = _key(candidates[0][0], candidates[0][1], alg)
        claims = jwt.decode(
            token, key.key, algorithms=[alg],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except (jwt.InvalidTokenError, jwt.PyJWKError, ValueError, TypeError):
        return JwtOutcome(None, Reason.SIGNATURE_INVALID)
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not _number(exp):
        return JwtOutcome(None, Reason.MALFORMED_CREDENTIAL)  # a credential must expire
    if now_s >= exp + leeway_s:
        return JwtOutcome(claims, Reason.CREDENTIAL_EXPIRED)
    if nbf is not None and (not _number(nbf) or now_s + leeway_s < nbf):
        return JwtOutcome(claims, Reason.OUT_OF_DATE_WINDOW)
    return JwtOutcome(claims, None)


def _candidates(header: dict[str, Any], jwks: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    alg, kid = header.get("alg"), header.get("kid")
    if isinstance(kid, str):
        found = [(kid, jwks[kid])] if kid in jwks else []
    else:
        found = list(jwks.items())
    return [(k, j) for k, j in found if _ALG_FOR_KTY.get(j.get("kty")) == alg]


def has_key(token: str, jwks: dict[str, dict[str, Any]], allowed: frozenset[str]) -> bool:
    """True when the cache holds exactly the one key `verify` would check this token with: then a
    SIGNATURE_INVALID is a verdict; without it, the cache simply cannot judge the token."""
    if len(token) > MAX_TOKEN_BYTES:
        return False
    header = jwt_header(token)
    if header is None or header.get("alg") not in allowed:
        return False
    return len(_candidates(header, jwks)) == 1


def _number(v: object) -> bool:
    """A finite number: `exp: NaN` or `Infinity` would otherwise never expire."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
