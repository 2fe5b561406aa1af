"""A credential-JWT issuer's public key from a file, as the JWK a bundle's `key` record carries.

Used by `door-bridge grants add key` on standalone sites. Only public keys are accepted: a JWK
with a private member (`d`) or an `oct` secret is refused, so an operator cannot put a signing
secret into grants.db by mistake (HS256 secrets belong in a central-signed bundle, if at all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


class JwkFileError(Exception):
    """The file is not a public Ed25519 / P-256 key; the message says what it is instead."""


def read_public_jwk(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise JwkFileError(f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    if text.lstrip().startswith("{"):
        return _from_jwk(text)
    if "PRIVATE KEY" in text:
        raise JwkFileError("this is a private key; give the issuer's public key")
    try:
        key = serialization.load_pem_public_key(text.encode())
    except ValueError as e:
        raise JwkFileError(f"neither a JWK nor a PEM public key ({e})") from None
    if isinstance(key, Ed25519PublicKey):
        return json.loads(OKPAlgorithm.to_jwk(key))
    if isinstance(key, EllipticCurvePublicKey) and isinstance(key.curve, SECP256R1):
        return json.loads(ECAlgorithm.to_jwk(key))
    raise JwkFileError("only Ed25519 (EdDSA) and P-256 (ES256) public keys are accepted")


def _from_jwk(text: str) -> dict[str, Any]:
    try:
        jwk = json.loads(text)
    except ValueError as e:
        raise JwkFileError(f"not valid JSON: {e}") from None
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
        raise JwkFileError("not a JWK object (no kty)")
    if jwk["kty"] == "oct" or any(m in jwk for m in _PRIVATE_MEMBERS):
        raise JwkFileError("holds a secret or private key; give the issuer's public JWK")
    try:
        if jwk["kty"] == "OKP":
            OKPAlgorithm.from_jwk(jwk)
        elif jwk["kty"] == "EC" and jwk.get("crv") == "P-256":
            ECAlgorithm.from_jwk(jwk)
        else:
            raise JwkFileError("only OKP/Ed25519 and EC/P-256 keys are accepted")
    except (ValueError, KeyError, TypeError) as e:
        raise JwkFileError(f"not a usable public key: {e}") from None
    return {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "alg", "use")}
