"""`door-bridge grants add key`: a standalone site adds (and revokes) a credential-JWT signing key."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.cli import cli, cli_config, decide_once
from verifier.types import Decision, Reason


def test_a_standalone_site_adds_a_jwt_key_with_the_cli_and_revokes_it(tmp_path):
    signing = tmp_path / "signing.key"
    out = cli("grants", "keygen", "--out", str(signing))
    public = out.stdout.split('public_key = "')[1].split('"')[0]
    config = cli_config(tmp_path, public, signing)
    for args in (("zone", "zone_front", "--devices", "FRONT", "--name", "Front"),
                 ("user", "user_layla", "--name", "Layla Hassan", "--zone", "zone_front")):
        r = cli("grants", "add", *args, "--config", str(config))
        assert r.returncode == 0, r.stderr
    issuer = Ed25519PrivateKey.generate()
    pem = tmp_path / "issuer.pub.pem"
    pem.write_bytes(issuer.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    now = int(time.time())
    token = jwt.encode({"sub": "user_layla", "iat": now, "exp": now + 3600}, issuer, algorithm="EdDSA",
                       headers={"kid": "app-2026"})

    assert asyncio.run(decide_once(config, token)).reason is Reason.SIGNATURE_INVALID  # no key yet
    r = cli("grants", "add", "key", "app-2026", "--key-file", str(pem), "--config", str(config))
    assert r.returncode == 0 and "added key" in r.stdout, r.stderr
    granted = asyncio.run(decide_once(config, token))
    assert granted.decision is Decision.GRANT and granted.user_id == "user_layla"

    r = cli("grants", "revoke", "key", "app-2026", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert asyncio.run(decide_once(config, token)).reason is Reason.SIGNATURE_INVALID


def test_grants_add_key_refuses_private_and_secret_keys(tmp_path):
    signing = tmp_path / "signing.key"
    public = cli("grants", "keygen", "--out", str(signing)).stdout.split('public_key = "')[1].split('"')[0]
    config = cli_config(tmp_path, public, signing)
    secret_jwk = tmp_path / "hs.jwk"
    secret_jwk.write_text(json.dumps({"kty": "oct", "k": "c2VjcmV0"}))
    for path, words in ((signing, "private key"), (secret_jwk, "secret or private key")):
        r = cli("grants", "add", "key", "k1", "--key-file", str(path), "--config", str(config))
        assert r.returncode == 2 and words in r.stderr, r.stderr
    r = cli("grants", "add", "key", "k1", "--config", str(config))
    assert r.returncode == 2 and "--key-file" in r.stderr
