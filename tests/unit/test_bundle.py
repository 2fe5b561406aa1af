"""Signed bundles into real SQLite files: what is applied, and that anything wrong changes nothing."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.builders import (
    DAY,
    DEVICE_CARD,
    FOREIGN_KEY,
    IC_CARD,
    INVITE,
    NOW,
    PIN,
    PIN_HASHING,
    READER,
    SIGNING_KEY,
    USER_CARD,
    apply,
    fresh_cache,
    iso,
    loaded_cache,
    make_bundle,
    records,
)
from tests.support.fuzz_checks import sign_manifest
from verifier import bundle as bundle_module
from verifier import schema
from verifier.bundle import (
    BundleRejected,
    BundleWriter,
    apply_bundle,
    apply_file,
    load_public_key,
    public_key_text,
    read_manifest,
)
from verifier.cache import CardRow, GrantCache
from verifier.credentials import parse
from verifier.decide import Verifier
from verifier.hashing import PinHashing, hash_invite
from verifier.timeutil import to_ms
from verifier.types import Decision, Reason, Source

PUBLIC = SIGNING_KEY.public_key()


def _card(cache: GrantCache, number: str) -> CardRow:
    row = cache.card(number)
    assert row is not None, number
    return row


def _snapshot(cache: GrantCache) -> list[str]:
    return list(cache.conn.iterdump())


def _decide(cache: GrantCache, scan: str, reader: str = READER):
    return Verifier(cache).decide(parse(scan.encode()), reader, Source.CARD, NOW)


def _refused(cache: GrantCache, bundle: bytes, match: str) -> BundleRejected:
    before = _snapshot(cache)
    with pytest.raises(BundleRejected, match=match) as info:
        apply(cache, bundle)
    assert _snapshot(cache) == before, "a refused bundle must leave the cache exactly as it was"
    return info.value


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[GrantCache]:
    c = loaded_cache(tmp_path)
    yield c
    c.close()


# --- applying ------------------------------------------------------------------------------------


def test_full_bundle_applies_every_record(tmp_path: Path) -> None:
    cache = fresh_cache(tmp_path)
    data = make_bundle(records(), version=7)
    result = apply(cache, data)
    assert (result.version, result.kind, result.records) == (7, "full", len(records()))
    assert result.not_after_ms == to_ms(NOW + 7 * DAY)
    assert cache.counts() == {"zones": 2, "users": 4, "grants": 4, "shifts": 1, "cards": 6,
                              "visitors": 1, "passcodes": 1, "jwks": 3}
    assert cache.meta.version == 7 and cache.meta.pin_hashing == PIN_HASHING
    assert _decide(cache, USER_CARD).decision is Decision.GRANT


def test_manifest_is_read_back_with_its_signed_claims() -> None:
    data = make_bundle(records(), version=3, kind="delta", base_version=2)
    manifest = read_manifest(data.split(b"\n", 1)[0], PUBLIC)
    body = data.split(b"\n", 1)[1]
    assert manifest.version == 3 and manifest.kind == "delta" and manifest.base_version == 2
    assert manifest.records == len(records())
    assert manifest.body_sha256 == hashlib.sha256(body).hexdigest()
    assert manifest.issued_at_ms == to_ms(NOW) and manifest.not_after_ms == to_ms(NOW + 7 * DAY)


def test_another_connection_sees_the_applied_bundle(tmp_path: Path) -> None:
    """The sync writes through its own connection; the deciding cache notices via data_version."""
    reader_side = fresh_cache(tmp_path)
    assert reader_side.meta.version == 0
    writer = schema.connect(str(tmp_path / "grants.db"))
    apply_bundle(writer, io.BytesIO(make_bundle(records(), version=2)), PUBLIC)
    writer.close()
    assert reader_side.refresh() is True
    assert reader_side.meta.version == 2
    assert _decide(reader_side, USER_CARD).decision is Decision.GRANT


def test_full_bundle_replaces_everything(cache: GrantCache) -> None:
    only_layla = [r for r in records() if r.get("number") != DEVICE_CARD]
    apply(cache, make_bundle(only_layla, version=2))
    assert cache.card(DEVICE_CARD) is None
    assert _decide(cache, DEVICE_CARD).reason is Reason.NO_GRANT


def test_bundle_file_round_trip(tmp_path: Path) -> None:
    writer = BundleWriter(version=1, issued_at=NOW, not_after=NOW + DAY, pin_hashing=PIN_HASHING)
    writer.add_all(records())
    path = tmp_path / "usb" / "site.bundle"
    path.parent.mkdir()
    writer.write_file(SIGNING_KEY, path)
    assert not path.with_name("site.bundle.part").exists()
    cache = fresh_cache(tmp_path)
    assert apply_file(cache.conn, path, PUBLIC).version == 1


def test_delta_upserts_and_deletes(cache: GrantCache) -> None:
    delta: list[dict[str, Any]] = [
        {"type": "card", "op": "delete", "number": "6b:06:c2:a2:5e:99:c6:8e:dc:be"},  # any spelling of the number
        {"type": "ic_card", "op": "delete", "cardNumber": IC_CARD},
        {"type": "grant", "op": "delete", "id": "g_omar"},
        {"type": "grant", "id": "g_omar2", "userId": "user_omar", "zoneId": "zone_stock"},
        {"type": "visitor", "op": "delete", "id": "v_ahmed"},
        {"type": "user", "id": "user_ex", "name": "Former Employee", "active": True},
    ]
    result = apply(cache, make_bundle(delta, version=2, kind="delta", base_version=1))
    assert (result.version, result.kind, result.records) == (2, "delta", 6)
    assert cache.meta.version == 2
    assert cache.card(USER_CARD) is None and cache.card(IC_CARD) is None
    assert _decide(cache, USER_CARD).reason is Reason.NO_GRANT
    assert _decide(cache, IC_CARD).reason is Reason.NO_GRANT
    assert _decide(cache, "0A1B2C3D").decision is Decision.GRANT  # Omar's new grant
    assert _decide(cache, "DEADBEEF01").decision is Decision.GRANT  # user_ex reactivated
    assert _decide(cache, INVITE).reason is Reason.NO_GRANT
    assert _decide(cache, DEVICE_CARD).decision is Decision.GRANT  # untouched by the delta


def test_delta_keeps_the_pin_salt_of_the_full_bundle(cache: GrantCache) -> None:
    apply(cache, make_bundle([{"type": "user", "id": "u9"}], version=2, kind="delta", base_version=1, pin_hashing=None))
    assert cache.meta.pin_hashing == PIN_HASHING
    assert Verifier(cache).decide(parse(PIN.encode(), hint="pin"), READER, Source.KEYPAD, NOW).decision is Decision.GRANT


def test_delta_cannot_change_the_pin_salt(cache: GrantCache) -> None:
    other = PinHashing(b"\x01" * 16, n=2**10)
    _refused(cache, make_bundle([], version=2, kind="delta", base_version=1, pin_hashing=other), "salt")


def test_zone_upsert_replaces_its_reader_list(cache: GrantCache) -> None:
    delta = [{"type": "zone", "id": "zone_stock", "name": "Stockroom", "readers": ["BRIDGE-new"]}]
    apply(cache, make_bundle(delta, version=2, kind="delta", base_version=1))
    assert [z.id for z in cache.zones_for_reader("BRIDGE-new")] == ["zone_stock"]
    assert cache.zones_for_reader(READER) == ()


# --- refusals: the previous cache stays in force ------------------------------------------------


def _tamper(data: bytes, old: bytes, new: bytes) -> bytes:
    head, body = data.split(b"\n", 1)
    assert body.count(old) == 1 and len(old) == len(new)
    return head + b"\n" + body.replace(old, new)


def test_tampered_body_byte_is_refused_and_old_grants_still_decide(cache: GrantCache) -> None:
    good = make_bundle([r for r in records() if r.get("id") != "g_layla"], version=2)
    _refused(cache, _tamper(good, b'"active":true}\n{"type":"user","id":"user_omar"',
                            b'"active":true}\n{"type":"user","id":"user_omaR"'), "tampered")
    _refused(cache, _tamper(good, b"Layla Hassan", b"Layla Hassam"), "digest")
    assert cache.meta.version == 1
    decision = _decide(cache, USER_CARD)
    assert decision.decision is Decision.GRANT and decision.cache_version == 1


def test_tampered_body_that_is_not_json_anymore_is_refused(cache: GrantCache) -> None:
    good = make_bundle(records(), version=2)
    _refused(cache, _tamper(good, b'{"type":"zone","id":"zone_stock"', b'{"type":"zone","id":"zone_stock\n'), "line 2")
    assert _decide(cache, USER_CARD).decision is Decision.GRANT


def test_tampered_body_with_deeply_nested_json_is_refused_not_a_crash(cache: GrantCache) -> None:
    head, body = make_bundle(records(), version=2).split(b"\n", 1)
    nested = b"[" * 5000 + b"]" * 5000 + b"\n"
    _refused(cache, head + b"\n" + nested + body, "line 2")
    assert _decide(cache, USER_CARD).decision is Decision.GRANT


@pytest.mark.parametrize("cut", [1, 40, 400])
def test_truncated_body_is_refused(cache: GrantCache, cut: int) -> None:
    data = make_bundle(records(), version=2)
    _refused(cache, data[:-cut], "truncated|line")
    assert _decide(cache, USER_CARD).decision is Decision.GRANT


def test_extra_record_appended_is_refused(cache: GrantCache) -> None:
    data = make_bundle(records(), version=2) + b'{"type":"user","id":"mallory"}\n'
    _refused(cache, data, "tampered or truncated")


def test_bundle_signed_by_a_foreign_key_is_refused(cache: GrantCache) -> None:
    _refused(cache, make_bundle(records(), version=2, key=FOREIGN_KEY), "signature does not verify")


def _manifest_claims(version: int = 2, body: bytes = b"") -> dict:
    return {"format": "door-bridge-bundle/1", "version": version, "kind": "full", "issued_at": iso(NOW),
            "not_after": iso(NOW + DAY), "body_sha256": hashlib.sha256(body).hexdigest(), "records": 0}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("first_line", "match"),
    [
        (b"", "no signed manifest"),  # empty file
        (b'{"type":"user","id":"u1"}\n', "not a valid EdDSA-signed JWS"),  # body only, no manifest
        (b"hello door\n", "not a valid EdDSA-signed JWS"),
        (b"\xff\xfe\x00garbage\n", "not ASCII"),
        (b"x" * 20000 + b"\n", "no signed manifest"),  # longer than any manifest
    ],
)
def test_missing_or_garbage_manifest_is_refused(cache: GrantCache, first_line: bytes, match: str) -> None:
    _refused(cache, first_line, match)


def test_manifest_without_a_newline_is_refused(cache: GrantCache) -> None:
    _refused(cache, make_bundle([], version=2).rstrip(b"\n"), "no signed manifest")


def test_alg_none_manifest_is_refused(cache: GrantCache) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(_manifest_claims()).encode())}."
    _refused(cache, token.encode() + b"\n", "EdDSA")


def test_hs256_manifest_is_refused_even_keyed_with_the_public_key(cache: GrantCache) -> None:
    secret_guess = SIGNING_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for key in (b"any shared secret of 32 bytes...", secret_guess):
        token = jwt.encode(_manifest_claims(), key, algorithm="HS256")
        _refused(cache, token.encode() + b"\n", "EdDSA")
    # and hand-rolled, keyed with the PEM text (PyJWT refuses to make that one itself)
    pem = SIGNING_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(_manifest_claims()).encode())}"
    sig = _b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    _refused(cache, f"{signing_input}.{sig}\n".encode(), "EdDSA")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "something/2"}, "format"),
        ({"version": 0}, "version"),
        ({"version": "2"}, "version"),
        ({"version": True}, "version"),
        ({"kind": "partial"}, "kind"),
        ({"kind": "delta"}, "base_version"),
        ({"body_sha256": "abc"}, "body_sha256"),
        ({"issued_at": "yesterday"}, "issued_at"),
        ({"pin_hash": {"alg": "md5"}}, "pin_hash"),
        ({"pin_hash": {"alg": "scrypt", "n": 3, "r": 8, "p": 1, "salt": _b64(b"s" * 16)}}, "range"),
    ],
)
def test_signed_manifest_with_bad_claims_is_refused(cache: GrantCache, change: dict, match: str) -> None:
    token = jwt.encode({**_manifest_claims(), **change}, SIGNING_KEY, algorithm="EdDSA")
    _refused(cache, token.encode() + b"\n", match)


@pytest.mark.parametrize("version", [1, 0])
def test_same_or_older_version_is_refused(tmp_path: Path, version: int) -> None:
    cache = loaded_cache(tmp_path)
    if version == 0:
        apply(cache, make_bundle(records(), version=5))
        version = 4
    _refused(cache, make_bundle(records()[:1], version=version), "rollback refused")
    assert _decide(cache, USER_CARD).decision is Decision.GRANT


def test_delta_with_the_wrong_base_is_refused(cache: GrantCache) -> None:
    _refused(cache, make_bundle([], version=3, kind="delta", base_version=2), "full bundle is needed")
    assert cache.meta.version == 1


def test_delta_onto_an_empty_cache_needs_base_zero(tmp_path: Path) -> None:
    cache = fresh_cache(tmp_path)
    _refused(cache, make_bundle(records(), version=2, kind="delta", base_version=1), "full bundle is needed")
    assert apply(cache, make_bundle(records(), version=1, kind="delta", base_version=0)).version == 1


# --- invalid records: refused with the line number, cache unchanged -----------------------------

_GRANT = {"type": "grant", "id": "g_new", "userId": "user_layla", "zoneId": "zone_kitchen"}


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"type": "hologram", "id": "x"}, "unknown record type 'hologram'"),
        ({"id": "x"}, "unknown record type"),
        ({**_GRANT, "revoked": "yes"}, "revoked must be true or false"),
        ({**_GRANT, "userId": 42}, "userId must be a non-empty string"),
        ({**_GRANT, "zoneId": ""}, "zoneId must be a non-empty string"),
        ({"type": "grant", "id": "g_new", "userId": "user_layla"}, "zoneId is required"),
        ({**_GRANT, "startsAt": "1st of June"}, "startsAt: not an ISO 8601"),
        ({**_GRANT, "endsAt": "2026-13-01T00:00:00Z"}, "endsAt: not an ISO 8601"),
        ({**_GRANT, "startsAt": [2026, 6, 1]}, "startsAt: expected an ISO 8601"),
        ({**_GRANT, "startsAt": iso(NOW), "endsAt": iso(NOW)}, "endsAt must be after startsAt"),
        ({**_GRANT, "startsAt": iso(NOW), "endsAt": iso(NOW - DAY)}, "endsAt must be after startsAt"),
        ({"type": "ic_card", "cardNumber": "1234", "devices": [READER], "startDate": 10**20}, "startDate"),
        ({"type": "ic_card", "cardNumber": "1234", "devices": [READER], "endDate": 10**30}, "endDate"),
        ({"type": "ic_card", "cardNumber": "1234", "devices": [READER], "endDate": 2**63}, "endDate"),
        ({"type": "ic_card", "cardNumber": "12 34 5", "devices": [READER]}, "cardNumber is not a card number"),
        ({"type": "ic_card", "cardNumber": "1234"}, "devices is required"),
        ({"type": "card", "number": "1234"}, "needs userId"),
        ({"type": "card", "number": "1234", "devices": [1, 2]}, "devices must be a list of strings"),
        ({"type": "visitor", "zoneIds": ["zone_stock"]}, "inviteCode or inviteCodeSha256"),
        ({"type": "passcode", "id": "p", "devices": [READER]}, "keyboardPwdHash is required"),
        ({"type": "key", "kid": "k", "jwk": "not-an-object"}, "JWK object"),
        ({"type": "grant", "op": "merge", "id": "g"}, "op must be upsert or delete"),
        ({"type": "grant", "op": "delete"}, "id is required"),
        ({"type": "zone", "id": "z", "scheduleAware": 1}, "scheduleAware must be true or false"),
    ],
)
def test_invalid_record_is_refused_with_its_line_number(cache: GrantCache, bad: dict, match: str) -> None:
    recs = records()
    recs.insert(3, bad)  # body line 4 → file line 5 (the manifest is line 1)
    err = _refused(cache, make_bundle(recs, version=2), match)
    assert str(err).startswith("record on line 5 is invalid")
    assert _decide(cache, USER_CARD).decision is Decision.GRANT


@pytest.mark.parametrize("line", [b"[1, 2, 3]", b"{", b"null", b'"grant"'])
def test_record_that_is_not_a_json_object_is_refused(cache: GrantCache, line: bytes) -> None:
    head, body = make_bundle(records(), version=2).split(b"\n", 1)
    _refused(cache, head + b"\n" + line + b"\n" + body, "line 2")


def test_passcode_without_pin_hashing_parameters_is_refused(tmp_path: Path) -> None:
    cache = fresh_cache(tmp_path)
    _refused(cache, make_bundle(records(), pin_hashing=None), "pin_hash")


def test_oversized_record_is_refused(cache: GrantCache) -> None:
    huge = {"type": "user", "id": "u_big", "name": "n" * (70 * 1024)}
    _refused(cache, make_bundle([huge], version=2), "longer than")


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_records_read_in_chunks_apply_as_a_whole_whatever_the_chunk(tmp_path: Path, chunk: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The body is read a chunk at a time: a record cut by a chunk's edge, a chunk of one byte,
    and a last record without its newline all land as when it was read a line at a time."""
    for name in ("reference", "chunked"):
        (tmp_path / name).mkdir()
    reference = loaded_cache(tmp_path / "reference")
    expected = _snapshot(reference)
    reference.close()
    monkeypatch.setattr(bundle_module, "_CHUNK", chunk)
    cache = loaded_cache(tmp_path / "chunked")
    assert _snapshot(cache) == expected
    head, body = make_bundle(records(), version=2).split(b"\n", 1)
    body = body.rstrip(b"\n")  # the last record without its newline, signed as such
    manifest = dataclasses.replace(read_manifest(head, PUBLIC), body_sha256=hashlib.sha256(body).hexdigest())
    head = sign_manifest(manifest.claims())
    assert apply(cache, head + b"\n" + body).records == len(records())
    cache.close()


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_a_record_at_the_size_limit_is_read_whole_and_one_byte_more_is_refused(
        cache: GrantCache, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_module, "_CHUNK", chunk)
    def user(name_len: int) -> dict[str, Any]:
        return {"type": "user", "id": "u_big", "name": "n" * name_len}
    fixed = len(json.dumps(user(0), separators=(",", ":")))
    at_limit, over = user(bundle_module.MAX_RECORD_BYTES - fixed), user(bundle_module.MAX_RECORD_BYTES - fixed + 1)
    # The name is longer than a name may be (256): the record is read whole, then refused for that.
    _refused(cache, make_bundle([at_limit], version=2), "name must be")
    _refused(cache, make_bundle([over], version=2), "longer than")


# --- time rules and secrets at rest -------------------------------------------------------------


def test_naive_datetimes_are_utc_and_offsets_are_honoured(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path, [
        {"type": "card", "number": "AA01", "devices": [READER], "start_at": "2025-04-12T17:00:00", "end_at": "2025-04-20T00:00:00"},
        {"type": "card", "number": "AA02", "devices": [READER], "start_at": "2025-04-12T17:00:00Z", "end_at": "2025-04-20T00:00:00z"},
        {"type": "card", "number": "AA03", "devices": [READER], "start_at": "2025-04-12T17:00:00+09:00", "end_at": "2025-04-20T00:00:00+00:00"},
    ])
    utc_17 = to_ms(datetime(2025, 4, 12, 17, tzinfo=UTC))
    assert _card(cache, "AA01").window.starts_ms == utc_17
    assert _card(cache, "AA02").window.starts_ms == utc_17
    assert _card(cache, "AA03").window.starts_ms == utc_17 - 9 * 3600 * 1000  # 17:00 JST is 08:00 UTC
    assert _card(cache, "AA01").window.ends_ms == _card(cache, "AA02").window.ends_ms


def test_sifely_epoch_millisecond_dates(tmp_path: Path) -> None:
    start_ms, end_ms = 1744502400123, 1745107200999  # ms precision survives
    cache = loaded_cache(tmp_path, [{"type": "ic_card", "cardNumber": "3054721", "cardName": "Room 7",
                                     "devices": [READER], "startDate": start_ms, "endDate": end_ms}])
    row = _card(cache, "3054721")
    assert (row.window.starts_ms, row.window.ends_ms) == (start_ms, end_ms)
    assert row.name == "Room 7" and row.devices == (READER,)


def test_open_ended_windows(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    far = NOW + timedelta(days=365 * 50)
    v = Verifier(cache)
    assert v.decide(parse(b"DEADBEEF01"), READER, Source.CARD, far).reason is Reason.CACHE_STALE  # policy, not window
    assert cache.grants("user_ex", "zone_stock")[0].window.starts_ms < to_ms(datetime(1900, 1, 1, tzinfo=UTC))


def test_invite_codes_are_stored_as_sha256_only(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    assert cache.visitor(hash_invite(INVITE)) is not None
    rows = cache.conn.execute("SELECT code_sha256 FROM visitors").fetchall()
    assert rows == [(hashlib.sha256(INVITE.encode()).hexdigest(),)]


def test_visitor_by_precomputed_digest(tmp_path: Path) -> None:
    code = "vis_OnlyTheCentralKnowsThis0001"
    cache = loaded_cache(tmp_path, [
        {"type": "zone", "id": "zone_stock", "readers": [READER]},
        {"type": "visitor", "inviteCodeSha256": hash_invite(code).upper(), "zoneIds": ["zone_stock"]},
    ])
    assert _decide(cache, code).decision is Decision.GRANT


def test_no_pin_or_invite_code_in_clear_in_the_sqlite_files(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    cache.close()
    files = sorted(tmp_path.glob("grants.db*"))
    assert files, "expected the SQLite file (and its WAL) on disk"
    blob = b"".join(f.read_bytes() for f in files)
    assert b"6B06C2A25E99C68EDCBE" in blob  # sanity: the grep does see clear-text records
    assert PIN.encode() not in blob
    assert INVITE.encode() not in blob and INVITE[4:].encode() not in blob


# --- the pinned public key, as configured -------------------------------------------------------


def test_public_key_accepts_pem_base64url_base64_and_hex() -> None:
    raw = PUBLIC.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = PUBLIC.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for text in (public_key_text(PUBLIC), base64.b64encode(raw).decode(), raw.hex(), pem, f"  {raw.hex()}\n"):
        assert load_public_key(text).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw


@pytest.mark.parametrize("text", ["", "not a key", "AAAA", "00" * 31, "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"])
def test_public_key_garbage_is_a_clear_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_key(text)


# --- concurrent appliers -------------------------------------------------------------------------


class _PausingStream(io.BytesIO):
    """A bundle stream that, at its first body line, waits until `gate` is set (another applier is
    inside its own apply), so two appliers interleave at the worst moment, deterministically."""

    def __init__(self, data: bytes, gate: threading.Event, reached: threading.Event) -> None:
        super().__init__(data)
        self._gate, self._reached, self._lines = gate, reached, 0

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        self._lines += 1
        if self._lines == 2:
            self._reached.set()
            assert self._gate.wait(10), "the second applier never reached its transaction"
        return super().readline(size)


def test_an_older_delta_applied_during_a_full_apply_is_refused(cache: GrantCache, tmp_path: Path) -> None:
    """The version/base check runs inside the write transaction: a delta from version 1 that was
    checked while a full bundle of version 5 was still being written must not land on top of it."""
    full = make_bundle(records(), version=5)
    delta = make_bundle([{"type": "card", "op": "delete", "number": USER_CARD}], version=2, kind="delta", base_version=1)
    second = schema.connect(cache.path)
    in_transaction, full_in_body = threading.Event(), threading.Event()
    second.set_trace_callback(lambda sql: in_transaction.set() if sql.startswith("BEGIN") else None)
    outcome: list[object] = []

    def apply_delta() -> None:
        full_in_body.wait(10)
        try:
            outcome.append(apply_bundle(second, io.BytesIO(delta), SIGNING_KEY.public_key()))
        except BundleRejected as e:
            outcome.append(e)

    worker = threading.Thread(target=apply_delta)
    worker.start()
    apply_bundle(cache.conn, _PausingStream(full, in_transaction, full_in_body), SIGNING_KEY.public_key())
    worker.join(20)
    second.close()
    cache.invalidate()
    cache.refresh()
    assert isinstance(outcome[0], BundleRejected), outcome
    assert "not newer than the cache's 5" in str(outcome[0])
    assert cache.meta.version == 5
    assert _decide(cache, USER_CARD).decision is Decision.GRANT
