"""SNA terminal flow against a real loopback server (identify path and bodies as assumed in
docs/upstreams.md; card/add as documented)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from bridge.upstream import UpstreamNotApplicable, UpstreamProtocolError, UpstreamRejected, UpstreamSection, build_adapters
from bridge.upstream.sna import SnaAdapter
from tests.support.fakes.sna import ACCESS_TOKEN, ENVIRONMENT, FakeSna
from verifier.types import CardNumber, Decision, DigitalIdToken, Reason, Source

pytest_plugins = ["tests.support.fakes.fixtures"]  # fake upstream servers, key file

CARD = CardNumber("6B06C2A25E99C68EDCBE")
# 2025-04-15 12:00 UTC: inside the seed's example window.
NOON = datetime(2025, 4, 15, 12, 0, tzinfo=timezone.utc)


def add_card(fake: FakeSna, **overrides: Any) -> None:
    """Register the seed's example card through the documented POST /card/add."""
    body = {
        "number": CARD.number, "name": "Guest Card", "devices": ["hotel-door-101", "hotel-door-102"],
        "start_at": "2025-04-13T00:00:00Z", "end_at": "2025-04-20T00:00:00Z",
        "created_at": "2025-04-13T04:50:00Z", "owner_client_id": "client_etoehotel", **overrides,
    }
    response = httpx.post(
        fake.server.url + "/card/add", json=body,
        headers={"Authorization": f"Bearer {ACCESS_TOKEN}", "X-Environment": ENVIRONMENT},
    )
    assert response.status_code == 201


def adapter_for(fake: FakeSna, now: datetime = NOON, **sna: Any) -> SnaAdapter:
    fake.now = lambda: now
    section = UpstreamSection.model_validate({"sna": {"base_url": fake.server.url, "device_sn": "hotel-door-101", **sna}})
    (adapter,) = build_adapters(section, now=lambda: now)
    assert isinstance(adapter, SnaAdapter)
    return adapter


def verify(adapter: SnaAdapter, credential: Any = CARD) -> Any:
    async def run() -> Any:
        try:
            return await adapter.verify(credential, "R-101", Source.CARD)
        finally:
            await adapter.aclose()

    return asyncio.run(run())


def test_known_card_on_its_device_unlocks(fake_sna: FakeSna) -> None:
    add_card(fake_sna)
    decision = verify(adapter_for(fake_sna, mac="AA:BB:CC:DD:EE:01"))
    assert decision.decision is Decision.GRANT and decision.reason is None and decision.online
    assert decision.user_name == "Guest Card"
    request = fake_sna.server.requests_to("/card/identify")[0]
    assert request.headers["x-environment"] == "standard"
    assert "authorization" not in request.headers, "the terminal endpoint is unauthenticated"
    assert request.json == {"number": CARD.number, "device_sn": "hotel-door-101", "mac": "AA:BB:CC:DD:EE:01"}


def test_unknown_card_is_denied_no_grant(fake_sna: FakeSna) -> None:
    decision = verify(adapter_for(fake_sna))
    assert (decision.decision, decision.reason) == (Decision.DENY, Reason.NO_GRANT)


def test_card_bound_to_other_devices_is_denied_no_grant(fake_sna: FakeSna) -> None:
    add_card(fake_sna, devices=["hotel-door-202"])
    decision = verify(adapter_for(fake_sna))
    assert (decision.decision, decision.reason) == (Decision.DENY, Reason.NO_GRANT)


@pytest.mark.parametrize(
    "now",
    [datetime(2025, 4, 12, 23, 59, tzinfo=timezone.utc), datetime(2025, 4, 20, 0, 0, tzinfo=timezone.utc)],
    ids=["before-start", "at-end (half-open)"],
)
def test_card_outside_its_window_is_denied_out_of_date_window(fake_sna: FakeSna, now: datetime) -> None:
    add_card(fake_sna)
    decision = verify(adapter_for(fake_sna, now=now))
    assert (decision.decision, decision.reason) == (Decision.DENY, Reason.OUT_OF_DATE_WINDOW)


def test_datetime_without_offset_is_utc(fake_sna: FakeSna) -> None:
    """`2025-04-20T09:00:00` ends at 09:00 UTC, not 09:00 JST: at 08:30 UTC the card still works,
    at 09:30 UTC it is out of its window (on both sides of the wire)."""
    add_card(fake_sna, end_at="2025-04-20T09:00:00")
    inside = verify(adapter_for(fake_sna, now=datetime(2025, 4, 20, 8, 30, tzinfo=timezone.utc)))
    outside = verify(adapter_for(fake_sna, now=datetime(2025, 4, 20, 9, 30, tzinfo=timezone.utc)))
    assert inside.decision is Decision.GRANT
    assert (outside.decision, outside.reason) == (Decision.DENY, Reason.OUT_OF_DATE_WINDOW)


def test_explicit_offset_is_honoured(fake_sna: FakeSna) -> None:
    add_card(fake_sna, end_at="2025-04-20T17:00:00+09:00")  # 08:00 UTC
    decision = verify(adapter_for(fake_sna, now=datetime(2025, 4, 20, 8, 30, tzinfo=timezone.utc)))
    assert decision.reason is Reason.OUT_OF_DATE_WINDOW


def test_wrong_environment_is_rejected_naming_the_setting(fake_sna: FakeSna) -> None:
    with pytest.raises(UpstreamRejected, match="upstream.sna.environment"):
        verify(adapter_for(fake_sna, environment="staging"))


def test_wrong_identify_path_is_rejected_naming_the_setting(fake_sna: FakeSna) -> None:
    with pytest.raises(UpstreamRejected, match="identify_path"):
        verify(adapter_for(fake_sna, identify_path="/v2/identify"))


@pytest.mark.parametrize(
    "body, problem",
    [
        (b'{"command": "open"}', "command"),
        (b'{"command": "deny", "card": {"number": "X", "end_at": "next tuesday"}}', "not an ISO 8601"),
        (b'{"command": "unlock", "card": "yes"}', "card"),
    ],
)
def test_answers_off_the_assumed_format_are_protocol_errors(fake_sna: FakeSna, body: bytes, problem: str) -> None:
    fake_sna.server.respond_raw(body)
    with pytest.raises(UpstreamProtocolError, match=problem):
        verify(adapter_for(fake_sna))


def test_only_card_numbers_are_sent(fake_sna: FakeSna) -> None:
    adapter = adapter_for(fake_sna)
    assert adapter.accepts(CARD, Source.CARD) and not adapter.accepts(DigitalIdToken("t"), Source.PHONE_QR)
    with pytest.raises(UpstreamNotApplicable):
        verify(adapter, DigitalIdToken("t"))
    assert fake_sna.server.requests == []


def test_heartbeat_is_a_documented_no_op(fake_sna: FakeSna) -> None:
    adapter = adapter_for(fake_sna)

    async def run() -> None:
        await adapter.heartbeat("R-101")
        await adapter.aclose()

    asyncio.run(run())
    assert fake_sna.server.requests == []
