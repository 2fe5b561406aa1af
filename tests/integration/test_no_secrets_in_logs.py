"""A whole day at the door, logged at DEBUG, and not one secret in the journal or the audit DB.

An in-process Daemon (real cache and outbox SQLite files, MockFactory pins) in online-first mode
talks to loopback Frontelio and Digital ID fakes, with API keys read from 0600 key FILES. It
decides cards, PINs, credential JWTs, invite codes and Digital ID QR URLs, then the same again
with Frontelio answering 401, Digital ID answering 401, and both down. Every structlog line (both
renderers) and every stdlib log record at DEBUG, the status snapshot and the audit DB files are
then searched for the API keys, PINs, whole card numbers, whole JWTs (and their signatures),
invite codes and Digital ID tokens. Fingerprints are what should be there instead.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.service import logsetup
from bridge.state import files as state_files
from bridge.inputs.base import Scan
from tests.support.builders import (
    DEVICE_CARD,
    INVITE,
    NOW,
    PIN,
    PIN_HASHING,
    READER,
    USER_CARD,
    make_jwt,
    records,
    user_claims,
)
from tests.support.fakes.digital_id import FakeDigitalId, employee
from tests.support.fakes.frontelio import API_KEY as FRONTELIO_KEY
from tests.support.fakes.frontelio import FakeFrontelio, Holder
from tests.support.harness import Site, make_config, running
from tests.support.fakes.fixtures import key_file
from verifier.types import (
    CardNumber,
    CredentialJwt,
    DigitalIdToken,
    InviteCode,
    Pin,
    Source,
    fingerprint,
)

pytest_plugins = ["tests.support.fakes.fixtures"]

DIGITAL_ID_KEY = "did_live_Q2x9VbTn4LmP7sRw1KyZ"
DIGITAL_ID_TOKEN = "Xk3Lp9Qr2Ws8Vt5Yz1Ab7Cd4Ef6Gh0Ij"
DIGITAL_ID_URL = f"https://id.example.org/verify.php?token={DIGITAL_ID_TOKEN}"
JWT = make_jwt(user_claims())
WRONG_PIN = "55501234"
UNKNOWN_CARD = "A1B2C3D4E5F60718"

SCANS: list[tuple[str, Source, str | None]] = [
    (USER_CARD, Source.CARD, None),
    (DEVICE_CARD, Source.CARD, None),
    (UNKNOWN_CARD, Source.CARD, None),
    (JWT, Source.PHONE_QR, None),
    (DIGITAL_ID_URL, Source.PHONE_QR, None),
    (INVITE, Source.VISITOR, None),
    (PIN, Source.KEYPAD, "pin"),
    (WRONG_PIN, Source.KEYPAD, "pin"),
]

SECRETS = {
    "frontelio api key": FRONTELIO_KEY,
    "frontelio api key body": FRONTELIO_KEY.removeprefix("mk_"),
    "digital id api key": DIGITAL_ID_KEY,
    "pin": PIN,
    "wrong pin": WRONG_PIN,
    "user card": USER_CARD,
    "device card": DEVICE_CARD,
    "unknown card": UNKNOWN_CARD,
    "jwt": JWT,
    "jwt payload": JWT.split(".")[1],
    "jwt signature": JWT.split(".")[2],
    "invite code": INVITE,
    "invite code body": INVITE.removeprefix("vis_"),
    "digital id token": DIGITAL_ID_TOKEN,
}


@pytest.fixture
def stdlib_debug() -> Iterator[io.StringIO]:
    """Every stdlib log record at DEBUG (httpx, httpcore, asyncio…), whatever the daemon sets."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def _scan_all(daemon, phase: str, decisions: list[str]) -> None:
    for raw, source, hint in SCANS:
        d = await daemon.pipeline.handle(Scan(READER, source, raw.encode(), hint))
        decisions.append(f"{phase}:{d.credential_kind}:{d.decision.value}:{d.reason.value if d.reason else '-'}")
        await asyncio.sleep(0)


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_day_of_scans_and_failures_leaves_no_secret_in_logs_or_audit(
        tmp_path: Path, fake_frontelio: FakeFrontelio, fake_digital_id: FakeDigitalId,
        stdlib_debug: io.StringIO, log_format: str) -> None:
    fake_frontelio.credentials[JWT] = Holder("user_layla", "Layla Hassan", "Stockroom")
    fake_frontelio.credentials[USER_CARD] = Holder("user_layla", "Layla Hassan", "Stockroom")
    # online-first sends a visitor's invite code to /access/verify as VISITOR
    fake_frontelio.credentials[INVITE] = Holder("", "ACME Pest Control — Ahmed", "Stockroom")
    fake_digital_id.api_key = DIGITAL_ID_KEY
    fake_digital_id.tokens[DIGITAL_ID_TOKEN] = ("valid", employee(7, "Jane Doe"))

    state = tmp_path / "state"
    state.mkdir()
    site = Site()
    site.install(state, records(), pin_hashing=PIN_HASHING)
    config = make_config(
        state, site, [],
        bridge={"mode": "online-first", "log_level": "debug", "log_format": log_format},
        cache={"jwt_algorithms": ["EdDSA", "ES256", "HS256"]},
        policy={"replay_window_s": 0, "rate_limit_denies": 1000},  # each phase decides afresh
        upstream={
            "http": {"verify_budget_s": 1.0, "breaker_failures": 1000, "heartbeat_interval_s": 3600},
            "frontelio": {"base_url": fake_frontelio.server.url,
                          "api_key_file": str(key_file(tmp_path / "frontelio.key", FRONTELIO_KEY))},
            "digital_id": {"base_url": fake_digital_id.server.url,
                           "api_key_file": str(key_file(tmp_path / "digital_id.key", DIGITAL_ID_KEY))},
        },
    )
    structlog_out = io.StringIO()
    logsetup.configure("debug", log_format, stream=structlog_out)
    decisions: list[str] = []
    snapshots: list[str] = []

    async def day() -> None:
        async with running(config, clock=lambda: NOW) as (daemon, _pins):
            await _scan_all(daemon, "online", decisions)
            fake_frontelio.api_keys = {"mk_someone_else"}  # our key revoked: 401
            fake_digital_id.api_key = "did_someone_else"
            await _scan_all(daemon, "unauthorized", decisions)
            snapshots.append(json.dumps(daemon.health.snapshot()))
            fake_frontelio.server.go_down()
            fake_digital_id.server.go_down()
            await _scan_all(daemon, "down", decisions)
            snapshots.append(json.dumps(daemon.health.snapshot()))

    try:
        asyncio.run(day())
    finally:
        logsetup.configure("info", "console")

    # The scenario really happened: online grants, 401 fallbacks, offline fallbacks.
    assert "online:jwt:GRANT:-" in decisions and "online:digital_id:GRANT:-" in decisions
    assert "online:card:GRANT:-" in decisions and "online:pin:GRANT:-" in decisions
    assert "online:invite:GRANT:-" in decisions
    assert "unauthorized:digital_id:DENY:UPSTREAM_UNAVAILABLE" in decisions
    assert "down:jwt:GRANT:-" in decisions  # from the cache
    sent = [r.json for r in fake_frontelio.server.requests_to("/access/verify")]
    assert {"credentialId": JWT, "readerId": READER, "source": "PHONE_QR"} in sent  # the secrets were really used
    assert {"credentialId": INVITE, "readerId": READER, "source": "VISITOR"} in sent

    logs = structlog_out.getvalue() + stdlib_debug.getvalue()
    assert logs.count("decision") >= len(decisions)
    assert "upstream_lost" in logs
    key = state_files.fingerprint_key(state)  # the daemon's own, made at its first start
    for credential in (CardNumber(USER_CARD), CredentialJwt(JWT), DigitalIdToken(DIGITAL_ID_TOKEN), InviteCode(INVITE), Pin(PIN)):
        assert fingerprint(credential, key) in logs, f"no fingerprint for the {credential.kind} scan: the grep would prove nothing"

    audit = b"".join(p.read_bytes() for p in sorted(state.glob("audit.db*")))
    assert b"VERIFY" in audit and fingerprint(Pin(PIN), key).encode() in audit
    assert key not in audit and key.hex() not in logs and key.hex().encode() not in audit
    places = {"logs": logs, "status snapshot": "\n".join(snapshots), "audit db": audit.decode("latin-1")}
    leaks = [f"{what} in {where}" for where, text in places.items() for what, secret in SECRETS.items() if secret in text]
    assert not leaks, leaks
