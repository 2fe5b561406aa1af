"""Credential JWTs checked offline with the keys the signed bundle carries (`key` records)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.builders import (
    DAY,
    EC_KEY,
    EC_KID,
    FOREIGN_KEY,
    HS_KID,
    NOW,
    OKP_KEY,
    OKP_KID,
    READER,
    apply,
    jwk_okp,
    loaded_cache,
    make_bundle,
    make_jwt,
    records,
    user_claims,
)
from verifier import jwtcheck
from verifier.cache import GrantCache
from verifier.credentials import parse
from verifier.decide import Policy, Verifier
from verifier.types import AccessDecision, CredentialJwt, Decision, Reason, Source

WITH_HS256 = Policy(jwt_algorithms=frozenset({"EdDSA", "ES256", "HS256"}))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrantCache]:
    cache = loaded_cache(tmp_path_factory.mktemp("jwt"))
    yield cache
    cache.close()


def check(cache: GrantCache, token: str, *, at: datetime = NOW, policy: Policy | None = None) -> AccessDecision:
    return Verifier(cache, policy or Policy()).decide(CredentialJwt(token), READER, Source.PHONE_NFC, at)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _hand_signed_hs256(claims: dict, secret: bytes, kid: str | None) -> str:
    """PyJWT refuses to HMAC with PEM key material, which is exactly what a key-confusion attacker does."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


# --- algorithms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_asymmetric_algorithms_grant_by_default(site: GrantCache, alg: str) -> None:
    d = check(site, make_jwt(user_claims(), alg=alg))
    assert (d.decision, d.user_id, d.zone_id) == (Decision.GRANT, "user_layla", "zone_stock")


def test_hs256_is_refused_unless_the_site_allows_it(site: GrantCache) -> None:
    token = make_jwt(user_claims(), alg="HS256")
    assert check(site, token).reason is Reason.SIGNATURE_INVALID
    assert check(site, token, policy=WITH_HS256).decision is Decision.GRANT


def test_allow_list_also_narrows_asymmetric_algorithms(site: GrantCache) -> None:
    only_eddsa = Policy(jwt_algorithms=frozenset({"EdDSA"}))
    assert check(site, make_jwt(user_claims(), alg="ES256"), policy=only_eddsa).reason is Reason.SIGNATURE_INVALID
    assert check(site, make_jwt(user_claims()), policy=only_eddsa).decision is Decision.GRANT


@pytest.mark.parametrize("policy", [Policy(), Policy(jwt_algorithms=frozenset({"none", "EdDSA"}))])
def test_alg_none_is_refused_even_if_listed(site: GrantCache, policy: Policy) -> None:
    for header in ({"alg": "none"}, {"alg": "none", "kid": OKP_KID}, {"alg": "None", "kid": OKP_KID}):
        token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(user_claims()).encode())}."
        assert check(site, token, policy=policy).reason is Reason.SIGNATURE_INVALID


def test_key_confusion_hs256_signed_with_public_key_material(site: GrantCache) -> None:
    ec_pem = EC_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    okp_pem = OKP_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    okp_raw = OKP_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ec_jwk_text = json.dumps(site.jwks()[EC_KID]).encode()
    for secret, kid in ((ec_pem, EC_KID), (okp_pem, OKP_KID), (okp_raw, OKP_KID), (ec_jwk_text, EC_KID),
                        (ec_pem, None), (okp_raw, None)):
        token = _hand_signed_hs256(user_claims(), secret, kid)
        d = check(site, token, policy=WITH_HS256)
        assert (d.decision, d.reason) == (Decision.DENY, Reason.SIGNATURE_INVALID), kid


# --- the header, read once -----------------------------------------------------------------------


def test_the_parsers_header_chooses_the_key_without_a_second_decode(site: GrantCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: the parser decoded the header to classify the scan, and the verifier decoded it
    again (then PyJWT a third time) on every JWT decision."""
    credential = parse(make_jwt(user_claims(), alg="ES256").encode())
    assert isinstance(credential, CredentialJwt)
    assert credential.header is not None and (credential.header["alg"], credential.header["kid"]) == ("ES256", EC_KID)

    def decoded_again(token: str) -> None:
        raise AssertionError("the header was decoded a second time")

    monkeypatch.setattr(jwtcheck, "jwt_header", decoded_again)
    d = Verifier(site, Policy()).decide(credential, READER, Source.PHONE_NFC, NOW)
    assert (d.decision, d.user_id) == (Decision.GRANT, "user_layla")


def test_a_header_that_is_not_the_tokens_own_picks_a_key_but_not_the_algorithm(site: GrantCache) -> None:
    """The carried header is as unverified as the token's: PyJWT still reads the token's own
    and refuses any other `alg`, so a mismatched pair is SIGNATURE_INVALID, never a grant."""
    token = make_jwt(user_claims())  # EdDSA, signed with the OKP key
    for header in ({"alg": "ES256", "kid": EC_KID}, {"alg": "HS256", "kid": HS_KID}):
        d = Verifier(site, WITH_HS256).decide(CredentialJwt(token, header=header), READER, Source.PHONE_NFC, NOW)
        assert (d.decision, d.reason) == (Decision.DENY, Reason.SIGNATURE_INVALID), header
    d = Verifier(site, Policy()).decide(CredentialJwt(token, header={"alg": "EdDSA", "kid": OKP_KID}), READER,
                                        Source.PHONE_NFC, NOW)
    assert d.decision is Decision.GRANT


# --- keys ----------------------------------------------------------------------------------------


def test_unknown_kid_is_signature_invalid(site: GrantCache) -> None:
    assert check(site, make_jwt(user_claims(), kid="rotated-away")).reason is Reason.SIGNATURE_INVALID


def test_kid_of_a_key_of_another_type_is_signature_invalid(site: GrantCache) -> None:
    assert check(site, make_jwt(user_claims(), alg="EdDSA", kid=EC_KID)).reason is Reason.SIGNATURE_INVALID
    assert check(site, make_jwt(user_claims(), alg="ES256", kid=HS_KID), policy=WITH_HS256).reason is Reason.SIGNATURE_INVALID


def test_without_kid_the_one_key_of_that_type_is_used(site: GrantCache) -> None:
    assert check(site, make_jwt(user_claims(), with_kid=False)).decision is Decision.GRANT
    assert check(site, make_jwt(user_claims(), with_kid=False, key=FOREIGN_KEY)).reason is Reason.SIGNATURE_INVALID


def test_without_kid_two_candidate_keys_are_ambiguous(tmp_path: Path) -> None:
    recs = records() + [{"type": "key", "kid": "okp-2", "jwk": jwk_okp(FOREIGN_KEY)}]
    cache = loaded_cache(tmp_path, recs)
    assert check(cache, make_jwt(user_claims(), with_kid=False)).reason is Reason.SIGNATURE_INVALID
    assert check(cache, make_jwt(user_claims(), kid="okp-2", key=FOREIGN_KEY)).decision is Decision.GRANT


def test_right_kid_wrong_signer_or_tampered_payload(site: GrantCache) -> None:
    assert check(site, make_jwt(user_claims(), key=FOREIGN_KEY)).reason is Reason.SIGNATURE_INVALID
    head, _, sig = make_jwt(user_claims()).split(".")
    forged = f"{head}.{_b64(json.dumps(user_claims(sub='user_omar')).encode())}.{sig}"
    assert check(site, forged).reason is Reason.SIGNATURE_INVALID


def test_key_removed_by_a_delta_stops_verifying(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    token = make_jwt(user_claims())
    assert check(cache, token).decision is Decision.GRANT
    apply(cache, make_bundle([{"type": "key", "op": "delete", "kid": OKP_KID}], version=2, kind="delta", base_version=1))
    assert check(cache, token).reason is Reason.SIGNATURE_INVALID


# --- time ----------------------------------------------------------------------------------------


def _ts(t: datetime) -> int:
    return int(t.timestamp())


def test_expired_credential(site: GrantCache) -> None:
    token = make_jwt(user_claims(exp=_ts(NOW - timedelta(minutes=1))))
    d = check(site, token)
    assert (d.reason, d.user_id, d.user_name) == (Reason.CREDENTIAL_EXPIRED, "user_layla", "Layla Hassan")


def test_expiry_leeway_is_honoured_and_exact(site: GrantCache) -> None:
    exp = NOW - timedelta(seconds=10)
    token = make_jwt(user_claims(exp=_ts(exp)))
    assert check(site, token).decision is Decision.GRANT  # 30 s default leeway
    assert check(site, token, policy=Policy(jwt_leeway_s=0)).reason is Reason.CREDENTIAL_EXPIRED
    edge = exp + timedelta(seconds=30)
    assert check(site, token, at=edge - timedelta(milliseconds=1)).decision is Decision.GRANT
    assert check(site, token, at=edge).reason is Reason.CREDENTIAL_EXPIRED


def test_not_yet_valid(site: GrantCache) -> None:
    soon = make_jwt(user_claims(nbf=_ts(NOW + timedelta(seconds=10))))
    assert check(site, soon).decision is Decision.GRANT  # within the 30 s leeway
    assert check(site, soon, policy=Policy(jwt_leeway_s=0)).reason is Reason.OUT_OF_DATE_WINDOW
    later = make_jwt(user_claims(nbf=_ts(NOW + timedelta(minutes=5))))
    assert check(site, later).reason is Reason.OUT_OF_DATE_WINDOW
    assert check(site, later, at=NOW + timedelta(minutes=5)).decision is Decision.GRANT


def test_the_injected_clock_decides_not_the_system_clock(site: GrantCache) -> None:
    then = datetime(2001, 9, 1, 8, tzinfo=UTC)
    # a visitor credential (zones in the token, no grant window): expired for 25 years by the machine's clock
    token = make_jwt({"sub": "v_1", "zoneIds": ["zone_stock"], "exp": _ts(then + DAY)})
    assert check(site, token, at=then).decision is Decision.GRANT
    assert check(site, token, at=then + 2 * DAY).reason is Reason.CREDENTIAL_EXPIRED


@pytest.mark.parametrize("exp", [None, "tomorrow", True, [1]])
def test_a_credential_without_a_numeric_exp_is_malformed(site: GrantCache, exp) -> None:
    claims = user_claims()
    claims.pop("exp")
    if exp is not None:
        claims["exp"] = exp
    token = _hand_signed_eddsa(claims)
    assert check(site, token).reason is Reason.MALFORMED_CREDENTIAL


def _hand_signed_eddsa(claims: dict) -> str:
    """PyJWT validates `exp` types when encoding; the central might not."""
    header = {"alg": "EdDSA", "kid": OKP_KID}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(OKP_KEY.sign(signing_input.encode()))}"


def test_hand_signer_makes_valid_tokens(site: GrantCache) -> None:
    assert check(site, _hand_signed_eddsa(user_claims())).decision is Decision.GRANT


# --- size and shape ------------------------------------------------------------------------------


def test_oversized_token_is_malformed(site: GrantCache) -> None:
    token = make_jwt(user_claims(pad="x" * 4000))
    assert len(token) > jwtcheck.MAX_TOKEN_BYTES
    assert check(site, token).reason is Reason.MALFORMED_CREDENTIAL
    assert Verifier(site).decide(parse(token.encode()), READER, Source.PHONE_QR, NOW).reason is Reason.MALFORMED_CREDENTIAL


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJFZERTQSJ9", "eyJ.eyJ.", ""])
def test_garbage_tokens_are_malformed_or_unsigned(token: str) -> None:
    outcome = jwtcheck.verify(token, {}, frozenset({"EdDSA"}), NOW.timestamp(), 30)
    assert outcome.claims is None
    assert outcome.reason in (Reason.MALFORMED_CREDENTIAL, Reason.SIGNATURE_INVALID)


def test_header_alg_that_is_not_a_string(site: GrantCache) -> None:
    token = f"{_b64(json.dumps({'alg': 5}).encode())}.{_b64(json.dumps(user_claims()).encode())}.c2ln"
    assert check(site, token).reason in (Reason.SIGNATURE_INVALID, Reason.MALFORMED_CREDENTIAL)
