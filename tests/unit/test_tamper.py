"""An attacker's attempts on the two signed things the door trusts: grant bundles and credential
JWTs. Every attempt is refused, the cache is exactly as it was, and the grants already in force
still decide GRANT (a refusal must never become a lock-out).

test_bundle.py covers the ordinary refusals one by one; this file goes exhaustively after
signatures (every manifest byte), keys (HS256/RS256/ES256 confusion against the EdDSA bundle key
and the credential keys), time (expired, not yet valid, non-numbers), size, and replays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    SECP384R1,
    generate_private_key,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.builders import (
    EC_KEY,
    EC_KID,
    HS_KID,
    NOW,
    OKP_KEY,
    OKP_KID,
    READER,
    SIGNING_KEY,
    USER_CARD,
    jwk_ec,
    jwk_okp,
    loaded_cache,
    make_bundle,
    make_jwt,
    records,
    user_claims,
)
from tests.support.fuzz_checks import signed_bundle
from verifier.bundle import (
    MAX_MANIFEST_BYTES,
    BundleRejected,
    apply_bundle,
    public_key_text,
)
from verifier.cache import GrantCache
from verifier.credentials import parse
from verifier.decide import Policy, Verifier
from verifier.jwtcheck import MAX_TOKEN_BYTES
from verifier.types import AccessDecision, Decision, Reason, Source

PUBLIC = SIGNING_KEY.public_key()
# The worst case for key confusion: a site that also opted into HS256.
ALL_ALGS = Policy(jwt_algorithms=frozenset({"EdDSA", "ES256", "HS256"}))
GOOD_JWT = make_jwt(user_claims())


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[GrantCache]:
    c = loaded_cache(tmp_path)
    yield c
    c.close()


def _snapshot(cache: GrantCache) -> list[str]:
    return list(cache.conn.iterdump())


def decide(cache: GrantCache, scan: str, policy: Policy = ALL_ALGS) -> AccessDecision:
    """A fresh verifier each time: no replay memory or rate limit between attempts."""
    return Verifier(cache, policy).decide(parse(scan.encode()), READER, Source.PHONE_QR, NOW)


def still_in_force(cache: GrantCache, version: int = 1) -> None:
    cache.invalidate()
    cache.refresh()
    assert cache.meta.version == version
    for scan in (USER_CARD, GOOD_JWT):
        d = decide(cache, scan)
        assert (d.decision, d.cache_version) == (Decision.GRANT, version), scan[:12]


def refused(cache: GrantCache, data: bytes) -> str:
    before = _snapshot(cache)
    with pytest.raises(BundleRejected) as info:
        apply_bundle(cache.conn, io.BytesIO(data), PUBLIC)
    assert _snapshot(cache) == before, "a refused bundle changed the cache"
    return str(info.value)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _segments(token: bytes) -> tuple[str, str, str]:
    head, payload, sig = token.decode().split(".")
    return head, payload, sig


# --- bundle signature ----------------------------------------------------------------------------


def test_every_byte_of_the_manifest_flipped_in_turn_is_refused(cache: GrantCache) -> None:
    """Bit 0 and bit 5 of each manifest byte (a base64 letter's neighbour and its other case),
    and the byte replaced by a signature-segment letter: 3 tampered bundles per byte."""
    good = make_bundle(records(), version=2)
    head, body = good.split(b"\n", 1)
    tried = 0
    for i in range(len(head)):
        for new in {head[i] ^ 0x01, head[i] ^ 0x20, ord("A") if head[i] != ord("A") else ord("B")}:
            tampered = head[:i] + bytes([new]) + head[i + 1:]
            if _decodes_same(head, tampered):
                continue  # see test_signature_malleability_in_the_padding_bits_changes_nothing
            before = _snapshot(cache) if tried % 97 == 0 else None
            with pytest.raises(BundleRejected):
                apply_bundle(cache.conn, io.BytesIO(tampered + b"\n" + body), PUBLIC)
            if before is not None:
                assert _snapshot(cache) == before
            tried += 1
    assert tried >= 2 * len(head)
    still_in_force(cache)


def _decodes_same(a: bytes, b: bytes) -> bool:
    """Two compact JWS that differ only in base64 padding bits of the signature."""
    try:
        sa, sb = (jwt.utils.base64url_decode(t.split(b".")[2]) for t in (a, b))
        return a.split(b".")[:2] == b.split(b".")[:2] and sa == sb
    except (ValueError, IndexError, TypeError):  # not three segments, or not base64
        return False


def test_signature_malleability_in_the_padding_bits_changes_nothing(tmp_path: Path) -> None:
    """A 64-byte signature is 86 base64 letters: the last one carries 4 unused bits. Changing
    them yields the same signature over the same claims, so it may apply — with exactly the
    cache the central signed, nothing an attacker chose."""
    head, body = make_bundle(records(), version=2).split(b"\n", 1)
    h, p, s = _segments(head)
    applied = 0
    for letter in "AQgw":  # bits 0-3 of the last letter vary over these, bits 4-5 are data
        alt = (h + "." + p + "." + s[:-1] + letter).encode()
        if not _decodes_same(head, alt):
            continue
        (tmp_path / letter).mkdir()
        c = loaded_cache(tmp_path / letter)
        applied += 1
        apply_bundle(c.conn, io.BytesIO(alt + b"\n" + body), PUBLIC)
        c.invalidate()
        c.refresh()
        assert c.meta.version == 2 and decide(c, USER_CARD).granted
        c.close()
    assert applied >= 1, "no padding-bit variant of the last letter: the premise of this test is wrong"


def test_every_body_byte_flipped_is_refused(cache: GrantCache) -> None:
    good = make_bundle(records(), version=2)
    head, body = good.split(b"\n", 1)
    for i in range(0, len(body), 7):  # every 7th byte: a few hundred full applies, a second or two
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        with pytest.raises(BundleRejected):
            apply_bundle(cache.conn, io.BytesIO(head + b"\n" + tampered), PUBLIC)
    still_in_force(cache)


def _manifest_claims(version: int = 2, body: bytes = b"") -> dict[str, Any]:
    return {"format": "door-bridge-bundle/1", "version": version, "kind": "full",
            "issued_at": "2026-06-01T12:00:00Z", "not_after": "2026-06-08T12:00:00Z",
            "body_sha256": hashlib.sha256(body).hexdigest(), "records": 0}


def _hs256(claims: dict[str, Any], secret: bytes, header: dict[str, Any] | None = None) -> str:
    """Hand-rolled: PyJWT refuses to HMAC with anything that looks like a public key."""
    signing_input = f"{_b64(json.dumps(header or {'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _public_key_spellings(public: Any) -> dict[str, bytes]:
    """Everything an attacker can read off a door (config.toml, docs) and try as an HMAC secret."""
    spellings = {
        "pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "der": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    if isinstance(public, type(PUBLIC)):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        spellings |= {"raw": raw, "config-text": public_key_text(public).encode(), "hex": raw.hex().encode()}
    return spellings


@pytest.mark.parametrize("spelling", ["pem", "der", "raw", "config-text", "hex"])
def test_hs256_manifest_keyed_with_the_bundle_public_key_is_refused(cache: GrantCache, spelling: str) -> None:
    secret = _public_key_spellings(PUBLIC)[spelling]
    message = refused(cache, _hs256(_manifest_claims(), secret).encode() + b"\n")
    assert "EdDSA" in message
    still_in_force(cache)


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ATTACKER_EC = generate_private_key(SECP256R1())
_ATTACKER_OKP = Ed25519PrivateKey.generate()


@pytest.mark.parametrize(("alg", "key"), [("RS256", _RSA), ("ES256", _ATTACKER_EC), ("EdDSA", _ATTACKER_OKP),
                                          ("PS256", _RSA), ("ES256", EC_KEY)])
def test_manifest_signed_with_another_algorithm_or_key_is_refused(cache: GrantCache, alg: str, key: Any) -> None:
    token = jwt.encode(_manifest_claims(), key, algorithm=alg)
    refused(cache, token.encode() + b"\n")
    still_in_force(cache)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_unsigned_manifest_is_refused_however_none_is_spelt(cache: GrantCache, alg: str) -> None:
    header = _b64(json.dumps({"alg": alg}).encode())
    for sig in ("", _b64(b"x" * 64)):
        refused(cache, f"{header}.{_b64(json.dumps(_manifest_claims()).encode())}.{sig}\n".encode())
    still_in_force(cache)


def test_good_signature_with_the_header_rewritten_to_another_alg_is_refused(cache: GrantCache) -> None:
    head, body = make_bundle(records(), version=2).split(b"\n", 1)
    _, p, s = _segments(head)
    for header in ({"alg": "HS256"}, {"alg": "none"}, {"alg": "EdDSA", "jwk": json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(_ATTACKER_OKP.public_key()))}):
        refused(cache, f"{_b64(json.dumps(header).encode())}.{p}.{s}\n".encode() + body)
    still_in_force(cache)


# --- rollback, replay, wrong base ---------------------------------------------------------------


def test_every_older_or_equal_version_is_refused_after_an_upgrade(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    apply_bundle(cache.conn, io.BytesIO(make_bundle(records(), version=5)), PUBLIC)
    for version in range(1, 6):
        for kind, base in (("full", None), ("delta", version - 1)):
            assert "rollback" in refused(cache, make_bundle([], version=version, kind=kind, base_version=base))
    still_in_force(cache, version=5)
    cache.close()


def test_a_bundle_replayed_is_refused_and_so_is_its_manifest_on_another_body(cache: GrantCache) -> None:
    v2 = make_bundle([{"type": "user", "id": "user_new"}], version=2, kind="delta", base_version=1)
    apply_bundle(cache.conn, io.BytesIO(v2), PUBLIC)
    assert "rollback" in refused(cache, v2)  # the same bytes again
    # v2's signed manifest presented for v3's body: the signed digest does not match.
    v3 = make_bundle([{"type": "user", "id": "mallory"}], version=3, kind="delta", base_version=2)
    v2_head, v3_body = v2.split(b"\n", 1)[0], v3.split(b"\n", 1)[1]
    refused(cache, v2_head + b"\n" + v3_body)
    # v3's manifest (newer) with v2's body: refused on the digest, not applied as "version 3".
    refused(cache, v3.split(b"\n", 1)[0] + b"\n" + v2.split(b"\n", 1)[1])
    still_in_force(cache, version=2)


def test_a_full_bundle_for_an_older_version_is_refused_even_with_more_grants(cache: GrantCache) -> None:
    apply_bundle(cache.conn, io.BytesIO(make_bundle(records(), version=3)), PUBLIC)
    generous = records() + [{"type": "card", "number": "FEEDFACE", "devices": [READER]}]
    refused(cache, make_bundle(generous, version=2))
    cache.invalidate()
    assert decide(cache, "FEEDFACE").reason is Reason.NO_GRANT
    still_in_force(cache, version=3)


@pytest.mark.parametrize("base", [0, 2, 5])
def test_a_delta_for_another_base_is_refused(cache: GrantCache, base: int) -> None:
    delta = make_bundle([{"type": "grant", "op": "delete", "id": "g_layla"}], version=max(base + 1, 3),
                        kind="delta", base_version=base)
    assert "full bundle is needed" in refused(cache, delta)
    still_in_force(cache)


def test_a_delta_for_this_base_signed_by_a_foreign_central_is_refused(cache: GrantCache) -> None:
    from tests.support.builders import FOREIGN_KEY

    delta = make_bundle([{"type": "grant", "op": "delete", "id": "g_layla"}], version=2, kind="delta",
                        base_version=1, key=FOREIGN_KEY)
    refused(cache, delta)
    still_in_force(cache)


# --- size ---------------------------------------------------------------------------------------


def test_validly_signed_manifest_over_the_size_cap_is_refused(cache: GrantCache) -> None:
    claims = _manifest_claims() | {"padding": "p" * MAX_MANIFEST_BYTES}
    token = jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA")
    assert "no signed manifest" in refused(cache, token.encode() + b"\n")
    still_in_force(cache)


def test_bundle_claiming_more_records_than_it_carries_is_refused(cache: GrantCache) -> None:
    body = make_bundle(records(), version=2).split(b"\n", 1)[1]
    claims = _manifest_claims(body=body) | {"records": 10**12}
    refused(cache, jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA").encode() + b"\n" + body)
    still_in_force(cache)


def test_oversized_credential_jwts_are_refused_even_when_validly_signed(cache: GrantCache) -> None:
    big = make_jwt(user_claims(padding="x" * MAX_TOKEN_BYTES))
    assert len(big) > MAX_TOKEN_BYTES
    assert decide(cache, big).reason is Reason.MALFORMED_CREDENTIAL
    still_in_force(cache)


# --- credential JWTs: key confusion ---------------------------------------------------------------

_CONFUSION_SECRETS = {
    **{f"okp-{k}": v for k, v in _public_key_spellings(OKP_KEY.public_key()).items()},
    **{f"ec-{k}": v for k, v in _public_key_spellings(EC_KEY.public_key()).items()},
    "okp-jwk-json": json.dumps(jwk_okp()).encode(),
    "ec-jwk-json": json.dumps(jwk_ec()).encode(),
    "okp-jwk-x": jwk_okp()["x"].encode(),
    "bundle-key-raw": _public_key_spellings(PUBLIC)["raw"],
}


@pytest.mark.parametrize("secret_name", sorted(_CONFUSION_SECRETS))
@pytest.mark.parametrize("kid", [OKP_KID, EC_KID, HS_KID, None])
def test_hs256_credential_keyed_with_a_public_key_is_signature_invalid(cache: GrantCache, secret_name: str,
                                                                       kid: str | None) -> None:
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    token = _hs256(user_claims(), _CONFUSION_SECRETS[secret_name], header)
    d = decide(cache, token)
    assert (d.decision, d.reason) == (Decision.DENY, Reason.SIGNATURE_INVALID)
    still_in_force(cache)


@pytest.mark.parametrize(("alg", "key", "kid"), [
    ("RS256", _RSA, OKP_KID), ("RS256", _RSA, None), ("PS256", _RSA, EC_KID),
    ("ES256", _ATTACKER_EC, EC_KID), ("ES256", _ATTACKER_EC, None), ("ES256", EC_KEY, OKP_KID),
    ("EdDSA", _ATTACKER_OKP, OKP_KID), ("EdDSA", OKP_KEY, EC_KID), ("ES384", generate_private_key(SECP384R1()), EC_KID),
])
def test_credential_signed_with_another_algorithm_or_key_is_signature_invalid(cache: GrantCache, alg: str, key: Any,
                                                                              kid: str | None) -> None:
    token = jwt.encode(user_claims(), key, algorithm=alg, headers={"kid": kid} if kid else None)
    assert decide(cache, token).reason is Reason.SIGNATURE_INVALID
    still_in_force(cache)


def test_embedded_or_remote_keys_in_the_header_are_ignored(cache: GrantCache) -> None:
    attacker_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(_ATTACKER_OKP.public_key()))
    for extra in ({"jwk": attacker_jwk}, {"jku": "https://evil.example/jwks.json"}, {"x5u": "https://evil.example/c"},
                  {"kid": "../../../../dev/null"}, {"kid": "' OR '1'='1"}, {"kid": attacker_jwk["x"]}):
        token = jwt.encode(user_claims(), _ATTACKER_OKP, algorithm="EdDSA", headers=extra)
        assert decide(cache, token).reason is Reason.SIGNATURE_INVALID, extra
    still_in_force(cache)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_credential_is_signature_invalid(cache: GrantCache, alg: str) -> None:
    header = _b64(json.dumps({"alg": alg, "kid": OKP_KID}).encode())
    token = f"{header}.{_b64(json.dumps(user_claims()).encode())}."
    assert decide(cache, token).reason is Reason.SIGNATURE_INVALID
    still_in_force(cache)


def test_algorithms_outside_the_allow_list_are_refused_even_with_the_right_key(cache: GrantCache) -> None:
    eddsa_only = Policy(jwt_algorithms=frozenset({"EdDSA"}))
    assert Verifier(cache, eddsa_only).decide(parse(make_jwt(user_claims(), alg="ES256").encode()), READER,
                                              Source.PHONE_QR, NOW).reason is Reason.SIGNATURE_INVALID
    assert Verifier(cache, eddsa_only).decide(parse(make_jwt(user_claims(), alg="HS256").encode()), READER,
                                              Source.PHONE_QR, NOW).reason is Reason.SIGNATURE_INVALID
    assert Verifier(cache, eddsa_only).decide(parse(GOOD_JWT.encode()), READER, Source.PHONE_QR, NOW).granted


def test_a_signed_token_with_its_claims_swapped_is_signature_invalid(cache: GrantCache) -> None:
    h, _, s = GOOD_JWT.split(".")
    other = _b64(json.dumps(user_claims(sub="user_ex")).encode())
    assert decide(cache, f"{h}.{other}.{s}").reason is Reason.SIGNATURE_INVALID
    still_in_force(cache)


# --- credential JWTs: time ------------------------------------------------------------------------

LEEWAY = ALL_ALGS.jwt_leeway_s
NOW_S = int(NOW.timestamp())


@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": NOW_S - int(LEEWAY)}, Reason.CREDENTIAL_EXPIRED),  # the first instant past exp + leeway
    ({"exp": NOW_S - 86400}, Reason.CREDENTIAL_EXPIRED),
    ({"exp": 0}, Reason.CREDENTIAL_EXPIRED),
    ({"exp": -(2**53)}, Reason.CREDENTIAL_EXPIRED),
    ({"nbf": NOW_S + int(LEEWAY) + 1}, Reason.OUT_OF_DATE_WINDOW),
    ({"nbf": NOW_S + 86400, "exp": NOW_S + 2 * 86400}, Reason.OUT_OF_DATE_WINDOW),
    ({"nbf": "yesterday"}, Reason.OUT_OF_DATE_WINDOW),
    ({"exp": None}, Reason.MALFORMED_CREDENTIAL),
    ({"exp": str(NOW_S + 3600)}, Reason.MALFORMED_CREDENTIAL),
    ({"exp": True}, Reason.MALFORMED_CREDENTIAL),
    ({"exp": [NOW_S + 3600]}, Reason.MALFORMED_CREDENTIAL),
])
def test_expired_not_yet_valid_and_untimed_credentials_are_refused(cache: GrantCache, claims: dict[str, Any],
                                                                   reason: Reason) -> None:
    token = make_jwt({k: v for k, v in user_claims(**claims).items() if v is not None})
    d = decide(cache, token)
    assert (d.decision, d.reason) == (Decision.DENY, reason)
    still_in_force(cache)


def test_the_leeway_is_honoured_on_both_edges(cache: GrantCache) -> None:
    assert decide(cache, make_jwt(user_claims(exp=NOW_S - int(LEEWAY) + 1))).granted
    assert decide(cache, make_jwt(user_claims(nbf=NOW_S + int(LEEWAY)))).granted


@pytest.mark.parametrize("exp", [float("nan"), float("inf")])
def test_a_non_finite_exp_is_not_a_credential_that_never_expires(cache: GrantCache, exp: float) -> None:
    token = make_jwt(user_claims(exp=exp))
    assert decide(cache, token).decision is Decision.DENY


# --- unauthenticated body bytes that are not UTF-8 encodable -------------------------------------


def test_a_lone_surrogate_in_an_unauthenticated_body_is_refused_as_a_bundle_problem(cache: GrantCache) -> None:
    # Last line, after every zone record: the batch is flushed after the loop, not inside a record.
    refused(cache, make_bundle(records(), version=2) + b'{"type":"user","id":"\\ud800"}\n')


def test_a_lone_surrogate_in_a_signed_record_is_refused_as_a_bundle_problem(cache: GrantCache) -> None:
    refused(cache, signed_bundle([{"type": "user", "id": "u1", "name": "\ud800"}]))


def test_later_grants_do_not_leak_from_a_refused_delta(cache: GrantCache) -> None:
    """A delta refused at its last line (bad digest) must not leave its first lines applied."""
    delta = make_bundle([{"type": "card", "number": "FEEDFACE", "devices": [READER]},
                         {"type": "grant", "op": "delete", "id": "g_layla"}], version=2, kind="delta", base_version=1)
    refused(cache, delta + b'{"type":"user","id":"extra"}\n')
    cache.invalidate()
    assert decide(cache, "FEEDFACE").reason is Reason.NO_GRANT
    still_in_force(cache)


def test_bundle_body_signed_by_us_but_carried_with_another_timeline(cache: GrantCache) -> None:
    """The same signed bytes with a re-dated manifest (not_after pushed out) lose the signature."""
    head, body = make_bundle(records(), version=2).split(b"\n", 1)
    h, p, s = _segments(head)
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["not_after"] = (NOW + timedelta(days=3650)).isoformat()
    refused(cache, f"{h}.{_b64(json.dumps(claims).encode())}.{s}\n".encode() + body)
    still_in_force(cache)
