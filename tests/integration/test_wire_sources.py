"""`source` is what was presented × how it was read (verifier/sources.py, docs/upstreams.md).

Every reader type × every credential kind it can produce goes through the real daemon to the
loopback Frontelio and Digital ID fakes; the test reads back what the fakes recorded, the audit
row and the journal line.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from bridge.inputs.base import Scan
from tests.support.builders import INVITE, make_jwt, user_claims
from tests.support.builders import NOW as JWT_NOW
from tests.support.fakes.digital_id import employee
from tests.support.fakes.fixtures import fake_digital_id, fake_frontelio, frontelio_key_file  # noqa: F401
from tests.support.harness import Site, door_records, make_config, running
from verifier.sources import is_visitor_jwt, presented_source
from verifier.types import CardNumber, CredentialJwt, DigitalIdToken, InviteCode, Malformed, Pin, Source

CARD = "6B06C2A25E99C68EDCBE"
USER_JWT = make_jwt(user_claims())
VISITOR_JWT = make_jwt({**user_claims(), "sub": None, "zoneIds": ["zone_stock"],
                        "exp": int((JWT_NOW + timedelta(hours=3)).timestamp())})
DIGITAL_ID = "https://id.example/verify.php?token=tok_valid_123"

# Reader type → (the Scan.source its input emits, the hint it gives the parser). The inputs' own
# tests pin what each emits (e.g. test_evdev_scanner: PHONE_QR); this is that table.
READERS = {
    "console": (Source.PHONE_QR, None),
    "serial": (Source.PHONE_QR, None),
    "evdev": (Source.PHONE_QR, None),
    "nfc_ndef": (Source.PHONE_NFC, None),
    "nfc_uid": (Source.CARD, "card"),
    "wiegand": (Source.CARD, "card"),
    "wiegand_keypad": (Source.KEYPAD, "pin"),
    "keypad": (Source.KEYPAD, "pin"),
}
TEXT_READERS = ("console", "serial", "evdev", "nfc_ndef")

# (credential kind, scan text, expected source for an optical reader, for an NFC reader, sent where)
TEXT_CREDENTIALS = [
    ("card", CARD, Source.CARD, Source.CARD, "frontelio"),
    ("jwt", USER_JWT, Source.PHONE_QR, Source.PHONE_NFC, "frontelio"),
    ("visitor_jwt", VISITOR_JWT, Source.VISITOR, Source.VISITOR, "frontelio"),
    ("invite", INVITE, Source.VISITOR, Source.VISITOR, "frontelio"),
    ("digital_id", DIGITAL_ID, Source.PHONE_QR, Source.PHONE_NFC, "digital_id"),
    ("pin", "4711#", Source.KEYPAD, Source.KEYPAD, None),  # a wedge keypad: never leaves the door
]


def _cases() -> list[tuple[str, str, str, Source, str | None]]:
    cases = []
    for reader in TEXT_READERS:
        for kind, text, optical, nfc, sent in TEXT_CREDENTIALS:
            cases.append((reader, kind, text, nfc if reader == "nfc_ndef" else optical, sent))
    for reader in ("nfc_uid", "wiegand"):
        cases.append((reader, "card", CARD, Source.CARD, "frontelio"))
    for reader in ("wiegand_keypad", "keypad"):
        cases.append((reader, "pin", "4711", Source.KEYPAD, None))
    return cases


CASES = _cases()


@pytest.mark.parametrize("reader", sorted(READERS))
async def test_every_reader_type_sends_the_source_of_what_was_presented(tmp_path, fake_frontelio, frontelio_key_file,
                                                                       fake_digital_id, reader):
    fake_digital_id.tokens["tok_valid_123"] = ("valid", employee(123, "John Smith"))
    site = Site()
    site.install(tmp_path, door_records("BRIDGE-1", JWT_NOW), now=JWT_NOW)
    cfg = make_config(tmp_path, site, [], bridge={"id": "BRIDGE-1", "mode": "online-first"},
                      upstream={"http": {"verify_budget_s": 1.0},
                                "frontelio": {"base_url": fake_frontelio.server.url, "api_key_file": str(frontelio_key_file)},
                                "digital_id": {"base_url": fake_digital_id.server.url}})
    read_by, hint = READERS[reader]
    cases = [c for c in CASES if c[0] == reader]
    assert cases
    with capture_logs() as logs:
        async with running(cfg, clock=lambda: JWT_NOW) as (daemon, _):
            for _, kind, text, expected, sent in cases:
                reader_id = f"R-{reader}-{kind}"
                daemon.parts.reader_door[reader_id] = "main"
                if kind == "pin" and hint is None:
                    daemon.parts.pin_readers.add(reader_id)  # a wedge keypad: configured with accept_pins
                decision = await daemon.pipeline.handle(Scan(reader_id, read_by, text.encode(), hint))
                assert decision.source is expected, (reader, kind, decision.source)
            await daemon.quiesce()
            rows = {e.body["readerId"]: e.body for e in daemon.parts.outbox.recent(100) if e.type == "VERIFY"}
    verify_bodies = {r.json["readerId"]: r.json for r in fake_frontelio.server.requests_to("/access/verify")}
    digital = {r.json["device_id"]: r.json for r in fake_digital_id.server.requests_to("/api/verify-token.php")}
    journal = {e["reader"]: e for e in logs if e["event"] == "decision"}
    for _, kind, text, expected, sent in cases:
        reader_id = f"R-{reader}-{kind}"
        assert rows[reader_id]["source"] == expected.value, (reader, kind)
        assert journal[reader_id]["source"] == expected.value, (reader, kind)
        if sent == "frontelio":
            body = verify_bodies[reader_id]
            assert body["source"] == expected.value, (reader, kind, body["source"])
            assert body["credentialId"] == (CARD if kind == "card" else text)
        elif sent == "digital_id":
            assert digital[reader_id]["type"] == ("nfc" if expected is Source.PHONE_NFC else "qr")
        else:
            assert reader_id not in verify_bodies and reader_id not in digital, "a PIN never leaves the door"


@pytest.mark.parametrize("read_by", list(Source))
def test_the_source_table_is_total(read_by):
    """Every credential kind × every way of reading has exactly the documented source."""
    nfc_like = read_by in (Source.PHONE_NFC, Source.CARD)
    assert presented_source(CardNumber(CARD), read_by) is Source.CARD
    assert presented_source(Pin("4711"), read_by) is Source.KEYPAD
    assert presented_source(InviteCode(INVITE), read_by) is Source.VISITOR
    assert presented_source(CredentialJwt(VISITOR_JWT), read_by) is Source.VISITOR
    assert presented_source(CredentialJwt(USER_JWT), read_by) is (Source.PHONE_NFC if nfc_like else Source.PHONE_QR)
    assert presented_source(DigitalIdToken("tok_valid_123"), read_by) is (
        Source.PHONE_NFC if read_by is Source.PHONE_NFC else Source.PHONE_QR)
    assert presented_source(Malformed("x"), read_by) is read_by


def test_visitor_jwt_detection_never_raises_on_garbage():
    for token in ("a.b.c", "eyJ.eyJ.", "x" * 10_000, "a.%%%.c", "a." + "W" * 5000 + ".c"):
        assert is_visitor_jwt(token) is False
    assert is_visitor_jwt(VISITOR_JWT) and not is_visitor_jwt(USER_JWT)


async def test_local_first_sends_an_invite_code_the_cache_cannot_decide_as_visitor(tmp_path, fake_frontelio,
                                                                                   frontelio_key_file):
    """An invite code the cache holds is decided at the door; one it does not hold goes to
    /access/verify with VISITOR (a visitor pass created after the last sync)."""
    from tests.support.harness import iso

    known = "vis_KnownKnownKnownKnown01"
    unknown = "vis_CreatedAfterTheSync0002"
    site = Site()
    records = door_records("BRIDGE-1", JWT_NOW) + [
        {"type": "visitor", "id": "v1", "inviteCode": known, "displayName": "Ahmed", "zoneIds": ["zone_a"],
         "validFrom": iso(JWT_NOW - timedelta(hours=1)), "validUntil": iso(JWT_NOW + timedelta(hours=3))}]
    site.install(tmp_path, records, now=JWT_NOW)
    cfg = make_config(tmp_path, site, [], bridge={"id": "BRIDGE-1", "mode": "local-first"},
                      upstream={"frontelio": {"base_url": fake_frontelio.server.url,
                                              "api_key_file": str(frontelio_key_file)}})
    async with running(cfg, clock=lambda: JWT_NOW) as (daemon, _):
        daemon.parts.reader_door["BRIDGE-1"] = "main"
        local = await daemon.pipeline.handle(Scan("BRIDGE-1", Source.PHONE_QR, known.encode()))
        online = await daemon.pipeline.handle(Scan("BRIDGE-1", Source.PHONE_QR, unknown.encode()))
        card = await daemon.pipeline.handle(Scan("BRIDGE-1", Source.PHONE_QR, CARD.encode()))
    assert (local.granted, local.online, local.source) == (True, False, Source.VISITOR)
    assert (online.online, online.source) == (True, Source.VISITOR)
    assert not card.online, "local-first: a card the cache holds is decided at the door"
    sent = [r.json for r in fake_frontelio.server.requests_to("/access/verify")]
    assert sent == [{"credentialId": unknown, "readerId": "BRIDGE-1", "source": "VISITOR"}]
