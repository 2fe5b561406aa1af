"""Frontelio adapter against a real loopback server speaking the `/access` wire format."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge import __version__
from bridge.upstream import (
    UpstreamNotApplicable,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamSection,
    build_adapters,
)
from bridge.upstream.frontelio import FrontelioAdapter
from bridge.upstream.http import USER_AGENT
from tests.support.fakes.frontelio import API_KEY, FakeFrontelio, Holder
from verifier.types import CardNumber, CredentialJwt, Decision, Pin, Reason, Source

pytest_plugins = ["tests.support.fakes.fixtures"]  # fake upstream servers, key file

JWT = CredentialJwt("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyX2FiYyJ9.c2ln")
LAYLA = Holder("user_abc", "Layla Hassan", "Back of House — Stockroom")


def adapter_for(fake: FakeFrontelio, key_file: Path, **http: Any) -> FrontelioAdapter:
    section = UpstreamSection.model_validate(
        {"frontelio": {"base_url": fake.server.url, "api_key_file": str(key_file)}, "http": http}
    )
    (adapter,) = build_adapters(section)
    assert isinstance(adapter, FrontelioAdapter)
    return adapter


async def verify_and_close(adapter: FrontelioAdapter, credential: Any, source: Source = Source.PHONE_NFC) -> Any:
    try:
        return await adapter.verify(credential, "BRIDGE-dxb1-stockroom", source)
    finally:
        await adapter.aclose()


def test_grant_round_trip_sends_the_documented_request(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    fake_frontelio.credentials[JWT.token] = LAYLA
    decision = asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), JWT))

    assert decision.decision is Decision.GRANT and decision.reason is None
    assert (decision.user_id, decision.user_name, decision.zone_name) == ("user_abc", "Layla Hassan", LAYLA.zoneName)
    assert decision.online and not decision.replay
    # The adapter holds no fingerprint key: the daemon fills the keyed fingerprint in (test_fingerprint_key).
    assert decision.fingerprint == "" and decision.credential_kind == "jwt"
    (request,) = fake_frontelio.server.requests
    assert (request.method, request.path) == ("POST", "/api/v1/access/verify")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT == f"door-bridge/{__version__}"
    assert request.json == {"credentialId": JWT.token, "readerId": "BRIDGE-dxb1-stockroom", "source": "PHONE_NFC"}


def test_deny_carries_the_upstream_reason(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    fake_frontelio.credentials[JWT.token] = Holder("user_abc", "Layla Hassan", "Stockroom", "OUT_OF_SHIFT_WINDOW")
    decision = asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), JWT))
    assert decision.decision is Decision.DENY
    assert decision.reason is Reason.OUT_OF_SHIFT_WINDOW
    assert decision.user_name == "Layla Hassan"


def test_card_is_sent_as_card_source(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    decision = asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), CardNumber("04A1B2C3"), Source.CARD))
    assert decision.reason is Reason.NO_GRANT
    assert fake_frontelio.server.requests[0].json["source"] == "CARD"
    assert fake_frontelio.server.requests[0].json["credentialId"] == "04A1B2C3"


def test_second_tap_within_two_seconds_is_a_replay(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    fake_frontelio.credentials[JWT.token] = LAYLA
    adapter = adapter_for(fake_frontelio, frontelio_key_file)

    async def twice() -> tuple[Any, Any]:
        first = await adapter.verify(JWT, "R1", Source.PHONE_QR)
        second = await adapter.verify(JWT, "R1", Source.PHONE_QR)
        await adapter.aclose()
        return first, second

    first, second = asyncio.run(twice())
    assert not first.replay and second.replay
    assert second.decision is Decision.GRANT


def test_keypad_entries_are_never_sent(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    adapter = adapter_for(fake_frontelio, frontelio_key_file)
    assert not adapter.accepts(Pin("1234"), Source.KEYPAD)
    assert not adapter.accepts(CardNumber("1234"), Source.KEYPAD)
    assert adapter.accepts(JWT, Source.VISITOR) and adapter.accepts(CardNumber("04A1"), Source.CARD)
    with pytest.raises(UpstreamNotApplicable):
        asyncio.run(verify_and_close(adapter, Pin("1234"), Source.KEYPAD))
    assert fake_frontelio.server.requests == []


def test_heartbeat_sends_reader_version_and_routed_address(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    adapter = adapter_for(fake_frontelio, frontelio_key_file)

    async def beat() -> None:
        await adapter.heartbeat("BRIDGE-1")
        await adapter.aclose()

    asyncio.run(beat())
    (request,) = fake_frontelio.server.requests_to("/access/reader-heartbeat")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.json["readerId"] == "BRIDGE-1"
    assert request.json["firmwareVersion"] == __version__
    # The fake listens on loopback, so the interface that routes to it is loopback.
    assert ipaddress.ip_address(request.json["ipAddress"]).is_loopback


def test_wrong_key_is_rejected_with_what_to_check(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    fake_frontelio.api_keys = {"mk_someOtherKey"}
    with pytest.raises(UpstreamRejected) as caught:
        asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), JWT))
    assert caught.value.status == 401
    assert "api_key_file" in str(caught.value)
    assert API_KEY not in str(caught.value)


def test_plan_gated_tenant_is_rejected_with_the_plan_named(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    fake_frontelio.plan_gated = True
    with pytest.raises(UpstreamRejected) as caught:
        asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), JWT))
    assert caught.value.status == 402
    assert "accessControl" in str(caught.value) and "GROWTH" in str(caught.value)


def test_wrong_base_path_says_to_check_the_prefix(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    adapter = adapter_for(fake_frontelio, frontelio_key_file)
    fake_frontelio.server.prefix = "/api/v2"  # the server moved; the config still says /api/v1
    with pytest.raises(UpstreamRejected, match="/api/v1"):
        asyncio.run(verify_and_close(adapter, JWT))


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"decision": "MAYBE", "reason": None}, "decision"),
        ({"decision": "DENY", "reason": 42}, "reason"),
        ({"decision": "GRANT", "reason": "NO_GRANT"}, "GRANT must carry reason null"),
        ({"decision": "GRANT", "reason": None, "userId": 42}, "userId"),
        ({"decision": "GRANT", "reason": None, "replay": "no"}, "replay"),
        ([1, 2, 3], "JSON object"),
    ],
)
def test_answers_off_the_documented_format_are_protocol_errors(
    fake_frontelio: FakeFrontelio, frontelio_key_file: Path, body: Any, problem: str
) -> None:
    import json

    fake_frontelio.server.respond_raw(json.dumps(body).encode())
    with pytest.raises(UpstreamProtocolError, match=problem):
        asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), JWT))


@pytest.mark.parametrize("raw, kept", [("BANNED", "BANNED"), ("CACHE_STALE", "CACHE_STALE"), (None, "(none)"),
                                       ("two words; <b>", "(not a code word)")])
def test_a_deny_is_a_deny_whatever_its_reason(
    fake_frontelio: FakeFrontelio, frontelio_key_file: Path, raw: str | None, kept: str
) -> None:
    """An undocumented reason (or none) is no reason to ask the cache: NO_GRANT, raw word kept."""
    import json

    fake_frontelio.server.respond_raw(json.dumps({"decision": "DENY", "reason": raw, "userId": None}).encode())
    decision = asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), JWT))
    assert (decision.decision, decision.reason, decision.upstream_reason) == (Decision.DENY, Reason.NO_GRANT, kept)
    assert decision.as_wire()["upstreamReason"] == kept


def test_a_documented_reason_is_taken_as_it_is(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    fake_frontelio.credentials[JWT.token] = Holder("user_abc", "Layla Hassan", "Stockroom", "GRANT_REVOKED")
    decision = asyncio.run(verify_and_close(adapter_for(fake_frontelio, frontelio_key_file), JWT))
    assert (decision.reason, decision.upstream_reason) == (Reason.GRANT_REVOKED, None)
    assert "upstreamReason" not in decision.as_wire()


def test_api_key_and_credential_never_reach_logs_or_errors(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    fake_frontelio.credentials[JWT.token] = LAYLA
    texts: list[str] = []

    async def scenario() -> None:
        adapter = adapter_for(fake_frontelio, frontelio_key_file, breaker_failures=1)
        texts.append(repr(adapter.__dict__))
        await adapter.verify(JWT, "R1", Source.PHONE_NFC)
        await adapter.heartbeat("R1")
        fake_frontelio.server.fail_with(503)
        for _ in range(2):  # the first opens the circuit, the second meets it open
            try:
                await adapter.verify(JWT, "R1", Source.PHONE_NFC)
            except Exception as e:  # noqa: BLE001 - collecting every message
                texts.append(f"{e!s} {e!r}")
        fake_frontelio.server.heal()
        fake_frontelio.api_keys = set()
        adapter._http.breaker.record_success()
        try:
            await adapter.verify(JWT, "R1", Source.PHONE_NFC)
        except UpstreamRejected as e:
            texts.append(f"{e!s} {e!r}")
        await adapter.aclose()

    with capture_logs() as logs:
        asyncio.run(scenario())
    texts += [repr(entry) for entry in logs]
    assert any("upstream_circuit_opened" in t for t in texts), "the scenario produced no log lines to check"
    assert len(texts) >= 4
    for text in texts:
        assert API_KEY not in text and API_KEY.removeprefix("mk_") not in text
        assert JWT.token not in text
