"""Online answers through the real daemon: who is asked, what a DENY means, what the door still
guards itself (replay window, rate limiter), what a late answer does, what the journal says."""

from __future__ import annotations

import asyncio
import json

import pytest
from structlog.testing import capture_logs

from bridge.config import ConfigError
from bridge.inputs.base import Scan
from tests.support.fakes.fixtures import fake_frontelio, fake_sna, frontelio_key_file  # noqa: F401
from tests.support.fakes.frontelio import Holder
from tests.support.harness import Site, door_records, make_config, relay_pulses, running, wait_for
from tests.support.harness import RunningClock
from tests.support.builders import NOW
from verifier.types import Reason, Source

READER = "BRIDGE-1"
CARD, REVOKED = "6B06C2A25E99C68EDCBE", "04A22C1A7B3F80"


def _cfg(tmp_path, upstream, mode="online-first", policy=None, **http):
    site = Site()
    site.install(tmp_path, door_records(READER, NOW), now=NOW)
    return make_config(tmp_path, site, [], bridge={"id": READER, "mode": mode}, policy=policy or {},
                       upstream={"http": {"verify_budget_s": 0.5, "retry_deadline_s": 1.0, "retry_max_wait_s": 0.1, **http},
                                 **upstream})


def _frontelio(fake, key_file):
    return {"frontelio": {"base_url": fake.server.url, "api_key_file": str(key_file)}}


async def _scan(daemon, text, source=Source.CARD, hint=None):
    daemon.parts.reader_door.setdefault(READER, "main")
    return await daemon.pipeline.handle(Scan(READER, source, text.encode(), hint))


# --- 3. SNA decides alone ---------------------------------------------------------------------


async def test_sna_is_asked_in_the_default_mode_and_online_only_after_an_exchange(tmp_path, fake_sna):
    fake_sna.now = lambda: NOW
    fake_sna.cards[CARD] = {"number": CARD, "name": "Guest Card", "devices": ["SN-0042"]}
    cfg = _cfg(tmp_path, {"sna": {"base_url": fake_sna.server.url, "device_sn": "SN-0042"}}, mode="local-first")
    with capture_logs() as logs:
        async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
            await asyncio.sleep(0.2)  # a heartbeat loop, if one ran, would have "succeeded" by now
            before = daemon.health.upstream.label
            grant = await _scan(daemon, CARD)
            # Denied by SNA although the cache holds the card as valid: SNA's command stands.
            fake_sna.cards.pop(CARD)
            await asyncio.sleep(2.1)  # past the replay window
            deny = await _scan(daemon, CARD)
    assert before == "unknown", "no exchange yet: the journal must not claim online"
    assert (grant.granted, grant.online) == (True, True)
    assert (deny.granted, deny.online, deny.reason) == (False, True, Reason.NO_GRANT)
    assert len(fake_sna.server.requests_to("/card/identify")) == 2
    lines = [e for e in logs if e["event"] == "decision"]
    assert [(e["decided"], e["upstream"]) for e in lines] == [("online", "online"), ("online", "online")]


def test_sna_with_local_only_is_refused_with_the_mode_to_set(tmp_path):
    with pytest.raises(ConfigError) as caught:
        _cfg(tmp_path, {"sna": {"base_url": "http://127.0.0.1:9", "device_sn": "SN-1"}}, mode="local-only")
    message = str(caught.value)
    assert message.startswith("<test>: bridge.mode: ") and 'mode = "local-first" or "online-first"' in message


async def test_sna_unreachable_then_the_cache_decides(tmp_path, fake_sna):
    cfg = _cfg(tmp_path, {"sna": {"base_url": fake_sna.server.url, "device_sn": "SN-0042"}}, mode="local-first")
    fake_sna.server.stop()
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        decision = await _scan(daemon, CARD)
        assert daemon.health.upstream.label == "offline"
    assert decision.granted and not decision.online


# --- 6. the door's own protections in online-first -------------------------------------------


async def test_online_first_one_good_card_three_times_pulses_once(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.replay_rule = False  # this central never says `replay: true`
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom")
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file))
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, factory):
        # Three presentations inside the 2 s replay window (the replay flags below prove they were).
        decisions = [await _scan(daemon, CARD) for _ in range(3)]
        await asyncio.sleep(0.5)
        pulses = relay_pulses(factory.pin(17))
    assert all(d.granted and d.online for d in decisions)
    assert [d.replay for d in decisions] == [False, True, True]
    assert len(pulses) == 1, f"the relay pulsed {len(pulses)} times for one presentation"


async def test_online_first_wrong_cards_are_rate_limited_locally(tmp_path, fake_frontelio, frontelio_key_file):
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file))
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        reasons = [(await _scan(daemon, f"FF{i:08X}")).reason for i in range(30)]
    assert reasons[:5] == [Reason.NO_GRANT] * 5
    assert reasons[5:] == [Reason.RATE_LIMITED] * 25


# --- 7. a DENY is a DENY; late DENYs -----------------------------------------------------------


async def test_an_undocumented_deny_reason_is_a_deny_not_a_cache_grant(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom", "BANNED")
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file))
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, factory):
        decision = await _scan(daemon, CARD)  # the cache would grant this card
        await daemon.quiesce()
        (row,) = [e.body for e in daemon.parts.outbox.recent(10) if e.type == "VERIFY"]
        pulses = relay_pulses(factory.pin(17))
    assert (decision.granted, decision.online, decision.reason) == (False, True, Reason.NO_GRANT)
    assert (row["reason"], row["upstreamReason"], row["online"]) == ("NO_GRANT", "BANNED", True)
    assert pulses == []


async def test_a_malformed_answer_still_falls_back_to_the_cache(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.server.respond_raw(json.dumps({"decision": "DENY", "reason": 7}).encode())
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file))
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        decision = await _scan(daemon, CARD)
    assert decision.granted and not decision.online


async def test_a_late_deny_is_recorded_and_the_next_decision_respects_it(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.replay_rule = False
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom", "GRANT_REVOKED")
    fake_frontelio.server.slow(0.6)
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file), policy={"replay_window_s": 0.2},
               verify_budget_s=0.2, late_answer_s=2.0)
    with capture_logs() as logs:
        async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
            first = await _scan(daemon, CARD)  # the cache answers at the budget: GRANT
            await wait_for(lambda: any(e.type == "LATE_UPSTREAM_DENY" for e in daemon.parts.outbox.recent(20)),
                           timeout=5, what="the late DENY recorded")
            second = await _scan(daemon, CARD)  # still slow: the cache would grant again
            other = await _scan(daemon, "0A1B2C3D4E5F")  # another credential is not affected
            await daemon.quiesce()
            late = next(e.body for e in daemon.parts.outbox.recent(20) if e.type == "LATE_UPSTREAM_DENY")
    assert first.granted and not first.online
    assert (second.granted, second.reason, second.online) == (False, Reason.GRANT_REVOKED, False)
    assert second.upstream_reason == "late:GRANT_REVOKED"
    assert other.reason is Reason.OUT_OF_DATE_WINDOW
    assert late["reason"] == "GRANT_REVOKED" and late["heldUntil"] and late["readerId"] == READER
    assert any(e["event"] == "upstream_late_deny" and e["log_level"] == "warning" for e in logs)
    assert [e["decided"] for e in logs if e["event"] == "decision"][:2] == ["cache", "late_deny"]


# --- 8. zone in the journal ----------------------------------------------------------------------


async def test_online_decisions_show_the_zone_in_the_journal(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Back of House — Stockroom")
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file))
    with capture_logs() as logs:
        async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
            await _scan(daemon, CARD)
    (line,) = [e for e in logs if e["event"] == "decision"]
    assert (line["decided"], line["zone"]) == ("online", "Back of House — Stockroom")


# --- 9. the SNA identify mapping is configuration ------------------------------------------------


async def test_sna_identify_request_and_answer_mapping_is_configurable(tmp_path, fake_sna):
    """A real endpoint that differs from the assumption: GET with query fields, the command at
    result.action as OPEN/REJECT, an X-Api-Token header. Only configuration changes."""
    from tests.support.fakes.server import Reply

    token = "sna-terminal-token-0123456789"
    key = tmp_path / "sna.key"
    key.write_text(token + "\n")
    key.chmod(0o600)

    def scan_endpoint(request):
        if request.headers.get("x-api-token") != f"Terminal {token}":
            return Reply(401, {"detail": "no token"})
        action = "OPEN" if request.query.get("code") == CARD and request.query.get("sn") == "SN-0042" else "REJECT"
        return Reply(200, {"result": {"action": action, "holder": {"number": request.query.get("code"), "name": "Guest"}}})

    fake_sna.server.routes[("GET", "/api/v2/terminal/scan")] = scan_endpoint
    sna = {"base_url": fake_sna.server.url, "device_sn": "SN-0042", "identify_path": "/api/v2/terminal/scan",
           "api_key_file": str(key),
           "identify": {"method": "GET", "number_field": "code", "device_sn_field": "sn",
                        "command_field": "result.action", "unlock_values": ["OPEN"], "deny_values": ["REJECT"],
                        "card_field": "result.holder", "auth_header": "X-Api-Token", "auth_scheme": "Terminal"}}
    cfg = _cfg(tmp_path, {"sna": sna}, mode="local-first")
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        grant = await _scan(daemon, CARD)
        deny = await _scan(daemon, "0A1B2C3D4E5F")
    assert (grant.granted, grant.online, grant.user_name) == (True, True, "Guest")
    assert (deny.granted, deny.online, deny.reason) == (False, True, Reason.NO_GRANT)
    first = fake_sna.server.requests_to("/api/v2/terminal/scan")[0]
    assert (first.method, first.query) == ("GET", {"code": CARD, "sn": "SN-0042"})


def test_sna_auth_header_without_a_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="auth_header and api_key_file"):
        _cfg(tmp_path, {"sna": {"base_url": "http://127.0.0.1:9", "device_sn": "S",
                                "identify": {"auth_header": "X-Api-Token"}}}, mode="local-first")
