"""Digital ID verify-token (GET and POST) against a real loopback server with the seed's codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.upstream import (
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamSection,
    UpstreamUnavailable,
    build_adapters,
)
from bridge.upstream.digital_id import DigitalIdAdapter
from tests.support.fakes.digital_id import FakeDigitalId, employee
from verifier.types import CardNumber, Decision, DigitalIdToken, Reason, Source

pytest_plugins = ["tests.support.fakes.fixtures"]  # fake upstream servers, key file

TOKEN = DigitalIdToken("a1b2c3d4e5f60718293a4b5c6d7e8f90")
ORG_KEY = "did_live_0123456789abcdef"


def adapter_for(fake: FakeDigitalId, tmp_path: Path | None = None, **digital_id: Any) -> DigitalIdAdapter:
    settings: dict[str, Any] = {"base_url": fake.server.url, **digital_id}
    if tmp_path is not None:
        key_file = tmp_path / "digital-id.key"
        key_file.write_text(ORG_KEY + "\n")
        key_file.chmod(0o600)
        settings["api_key_file"] = str(key_file)
    (adapter,) = build_adapters(UpstreamSection.model_validate({"digital_id": settings}))
    assert isinstance(adapter, DigitalIdAdapter)
    return adapter


def verify(adapter: DigitalIdAdapter, source: Source = Source.PHONE_QR) -> Any:
    async def run() -> Any:
        try:
            return await adapter.verify(TOKEN, "TURNSTILE_01", source)
        finally:
            await adapter.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_valid_token_grants_with_the_employee(fake_digital_id: FakeDigitalId, method: str) -> None:
    fake_digital_id.tokens[TOKEN.token] = ("valid", employee(123, "John Smith"))
    decision = verify(adapter_for(fake_digital_id, method=method, location="Main_Entrance"))
    assert decision.decision is Decision.GRANT and decision.reason is None and decision.online
    assert (decision.user_id, decision.user_name) == ("123", "John Smith")
    (request,) = fake_digital_id.server.requests
    assert (request.method, request.path) == (method, "/api/verify-token.php")
    sent = request.query if method == "GET" else request.json
    assert sent == {"token": TOKEN.token, "type": "qr", "location": "Main_Entrance", "device_id": "TURNSTILE_01"}
    assert "x-api-key" not in request.headers, "no key configured, none sent"


def test_nfc_source_is_sent_as_nfc_type_and_device_id_can_be_fixed(fake_digital_id: FakeDigitalId) -> None:
    fake_digital_id.tokens[TOKEN.token] = ("valid", employee(7, "Ann Lee"))
    verify(adapter_for(fake_digital_id, device_id="ACCESS_PANEL_03"), Source.PHONE_NFC)
    assert fake_digital_id.server.requests[0].json["type"] == "nfc"
    assert fake_digital_id.server.requests[0].json["device_id"] == "ACCESS_PANEL_03"


@pytest.mark.parametrize(
    "state, reason",
    [
        ("expired", Reason.CREDENTIAL_EXPIRED),
        ("revoked", Reason.GRANT_REVOKED),
        ("card_expired", Reason.OUT_OF_DATE_WINDOW),
        ("employee_inactive", Reason.HOLDER_INACTIVE),
        ("token_not_found", Reason.NO_GRANT),
    ],
)
def test_documented_403_codes_map_to_reasons(fake_digital_id: FakeDigitalId, state: str, reason: Reason) -> None:
    fake_digital_id.tokens[TOKEN.token] = (state, employee(1, "X Y"))
    decision = verify(adapter_for(fake_digital_id))
    assert (decision.decision, decision.reason) == (Decision.DENY, reason)


@pytest.mark.parametrize("code", ["missing_token", "invalid_type"])
def test_documented_400_codes_are_malformed_credential(fake_digital_id: FakeDigitalId, code: str) -> None:
    fake_digital_id.server.respond_raw(
        json.dumps({"success": False, "valid": False, "error": code, "message": "..."}).encode(), status=400
    )
    decision = verify(adapter_for(fake_digital_id))
    assert (decision.decision, decision.reason) == (Decision.DENY, Reason.MALFORMED_CREDENTIAL)


def test_server_error_is_unavailable(fake_digital_id: FakeDigitalId) -> None:
    fake_digital_id.tokens[TOKEN.token] = ("server_error", {})
    with pytest.raises(UpstreamUnavailable) as caught:
        verify(adapter_for(fake_digital_id))
    assert caught.value.status == 500


def test_api_key_is_sent_as_x_api_key_and_never_logged(fake_digital_id: FakeDigitalId, tmp_path: Path) -> None:
    fake_digital_id.api_key = ORG_KEY
    fake_digital_id.tokens[TOKEN.token] = ("valid", employee(1, "X Y"))
    with capture_logs() as logs:
        decision = verify(adapter_for(fake_digital_id, tmp_path, method="GET"))
    assert decision.granted
    request = fake_digital_id.server.requests[0]
    assert request.headers["x-api-key"] == ORG_KEY
    assert "api_key" not in request.query, "the key goes in the header, not the URL"
    assert ORG_KEY not in repr(logs)


def test_unauthorized_says_what_to_check_without_the_key(fake_digital_id: FakeDigitalId, tmp_path: Path) -> None:
    fake_digital_id.api_key = "did_live_the_right_one"
    with pytest.raises(UpstreamRejected) as caught:
        verify(adapter_for(fake_digital_id, tmp_path))
    assert caught.value.status == 401
    assert "api_key_file" in str(caught.value) and ORG_KEY not in str(caught.value)


def test_key_required_but_not_configured_is_rejected(fake_digital_id: FakeDigitalId) -> None:
    fake_digital_id.api_key = ORG_KEY
    with pytest.raises(UpstreamRejected, match="REQUIRE_API_KEY_FOR_VERIFICATION"):
        verify(adapter_for(fake_digital_id))


@pytest.mark.parametrize(
    "status, body, problem",
    [
        (200, {"success": "true", "valid": True}, "success"),
        (200, {"success": True}, "valid"),
        (403, {"success": True, "valid": True}, "success with HTTP 403"),
        (200, {"success": True, "valid": True, "employee": {"id": True}}, "employee.id"),
    ],
)
def test_answers_off_the_documented_format_are_protocol_errors(
    fake_digital_id: FakeDigitalId, status: int, body: Any, problem: str
) -> None:
    fake_digital_id.server.respond_raw(json.dumps(body).encode(), status=status)
    with pytest.raises(UpstreamProtocolError, match=problem):
        verify(adapter_for(fake_digital_id))


def test_an_undocumented_code_is_still_a_denial_with_the_code_kept(fake_digital_id: FakeDigitalId) -> None:
    fake_digital_id.server.respond_raw(json.dumps({"success": False, "valid": False, "error": "banned_forever"}).encode(),
                                       status=403)
    decision = verify(adapter_for(fake_digital_id))
    assert (decision.decision, decision.reason, decision.online) == (Decision.DENY, Reason.NO_GRANT, True)
    assert decision.as_wire()["upstreamReason"] == "banned_forever"


def test_failure_without_a_code_still_denies(fake_digital_id: FakeDigitalId) -> None:
    fake_digital_id.server.respond_raw(json.dumps({"success": True, "valid": False}).encode())
    decision = verify(adapter_for(fake_digital_id))
    assert (decision.decision, decision.reason) == (Decision.DENY, Reason.NO_GRANT)


def test_only_digital_id_tokens_are_accepted(fake_digital_id: FakeDigitalId) -> None:
    adapter = adapter_for(fake_digital_id)
    assert adapter.accepts(TOKEN, Source.PHONE_QR)
    assert not adapter.accepts(CardNumber("04A1"), Source.CARD)
    assert not adapter.accepts(TOKEN, Source.KEYPAD)
    asyncio.run(adapter.aclose())
