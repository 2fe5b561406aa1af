"""The running daemon against real loopback servers speaking each seed's wire format.

Frontelio `/access/verify` + `/access/reader-heartbeat`, the SNA terminal flow, Digital ID
`verify-token`, and the bridge protocol (bundle sync, event ingest). Decisions go through
`Daemon.handle` exactly as an input's scans do.
"""

from __future__ import annotations

import asyncio
import socket

from structlog.testing import capture_logs

from bridge import __version__
from bridge.inputs.base import Scan
from tests.support.builders import NOW, SIGNING_KEY
from tests.support.fakes.digital_id import employee
from tests.support.fakes.fixtures import (  # noqa: F401  (pytest fixtures)
    central_key_file,
    fake_central,
    fake_digital_id,
    fake_frontelio,
    fake_sna,
    frontelio_key_file,
)
from tests.support.fakes.frontelio import Holder
from tests.support.harness import RunningClock, Site, door_records, iso, make_config, running, wait_for
from verifier.bundle import public_key_text
from verifier.types import Reason, Source

READER = "BRIDGE-1"
CARD, REVOKED = "6B06C2A25E99C68EDCBE", "04A22C1A7B3F80"


def _version(daemon) -> int:
    daemon.parts.cache.refresh()
    return daemon.parts.cache.meta.version


def _cfg(tmp_path, upstream, mode="online-first", site=None, **http):
    site = site or Site()
    site.install(tmp_path, door_records(READER, NOW), now=NOW)
    cfg = make_config(tmp_path, site, [], bridge={"id": "BRIDGE-1", "mode": mode},
                      upstream={"http": {"verify_budget_s": 0.5, "breaker_failures": 3, "breaker_cooldown_s": 1.0,
                                         "retry_deadline_s": 2.0, "retry_max_wait_s": 0.2, **http}, **upstream})
    return cfg


async def _scan(daemon, text, source=Source.CARD):
    daemon.parts.reader_door.setdefault(READER, "main")
    return await daemon.pipeline.handle(Scan(READER, source, text.encode()))


async def test_frontelio_online_first_grant_and_deny_round_trip(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom")
    fake_frontelio.credentials[REVOKED] = Holder("user_def", "Omar Said", "Stockroom", "OUT_OF_SHIFT_WINDOW")
    cfg = _cfg(tmp_path, {"frontelio": {"base_url": fake_frontelio.server.url, "api_key_file": str(frontelio_key_file)}})
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, factory):
        grant = await _scan(daemon, CARD)
        deny = await _scan(daemon, REVOKED)
        await daemon.quiesce()
        rows = [e.body for e in daemon.parts.outbox.recent(10) if e.type == "VERIFY"]
    assert (grant.granted, grant.online, grant.user_name, grant.zone_name) == (True, True, "Layla Hassan", "Stockroom")
    assert (deny.reason, deny.online) == (Reason.OUT_OF_SHIFT_WINDOW, True)
    assert [r["online"] for r in rows] == [True, True]
    bodies = [r.json for r in fake_frontelio.server.requests_to("/access/verify")]
    assert bodies[0] == {"credentialId": CARD, "readerId": READER, "source": "CARD"}
    auth = fake_frontelio.server.requests_to("/access/verify")[0].headers["authorization"]
    assert auth.startswith("Bearer mk_")


async def test_sna_terminal_flow_unlock_and_deny(tmp_path, fake_sna):
    fake_sna.now = lambda: NOW
    fake_sna.cards[CARD] = {"number": CARD, "name": "Guest Card", "devices": ["SN-0042"],
                            "start_at": "2026-05-30T00:00:00", "end_at": iso(NOW.replace(day=20))}
    cfg = _cfg(tmp_path, {"sna": {"base_url": fake_sna.server.url, "device_sn": "SN-0042"}})
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        grant = await _scan(daemon, CARD)
        deny = await _scan(daemon, "ABCDEF0123")
    assert grant.granted and grant.online
    assert not deny.granted and deny.online
    request = fake_sna.server.requests_to("/card/identify")[0]
    assert request.headers["x-environment"] == "standard" and request.json["number"] == CARD


async def test_digital_id_tokens_go_online_even_in_local_first(tmp_path, fake_digital_id):
    fake_digital_id.tokens["tok_valid_123"] = ("valid", employee(123, "John Smith"))
    fake_digital_id.tokens["tok_revoked_9"] = ("revoked", employee(9, "Jane Doe"))
    cfg = _cfg(tmp_path, {"digital_id": {"base_url": fake_digital_id.server.url, "location": "Main_Entrance"}},
               mode="local-first")
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, factory):
        grant = await _scan(daemon, "https://id.example/verify.php?token=tok_valid_123", Source.PHONE_QR)
        deny = await _scan(daemon, "https://id.example/verify.php?token=tok_revoked_9", Source.PHONE_QR)
        local = await _scan(daemon, CARD)  # local-first: cards never leave the door
    assert (grant.granted, grant.online, grant.user_name) == (True, True, "John Smith")
    assert (deny.reason, deny.online) == (Reason.GRANT_REVOKED, True)
    assert local.granted and not local.online
    sent = fake_digital_id.server.requests_to("/api/verify-token.php")
    assert len(sent) == 2 and sent[0].json == {"token": "tok_valid_123", "type": "qr", "location": "Main_Entrance",
                                               "device_id": READER}


async def test_upstream_down_means_cache_decisions_marked_offline(tmp_path, fake_frontelio, frontelio_key_file):
    cfg = _cfg(tmp_path, {"frontelio": {"base_url": fake_frontelio.server.url, "api_key_file": str(frontelio_key_file)}})
    fake_frontelio.server.stop()
    with capture_logs() as logs:
        async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
            first = await _scan(daemon, CARD)
            second = await _scan(daemon, REVOKED)
            assert daemon.health.upstream.label == "offline"
    assert first.granted and not first.online
    assert second.reason is Reason.GRANT_REVOKED and not second.online
    lines = [entry for entry in logs if entry["event"] == "decision"]
    assert [entry["upstream"] for entry in lines] == ["offline", "offline"]
    assert [entry["decided"] for entry in lines] == ["cache", "cache"]
    assert sum(entry["event"] == "upstream_lost" for entry in logs) == 1


async def test_slow_upstream_costs_at_most_the_budget_then_the_cache_decides(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom")
    fake_frontelio.server.slow(3.0)
    cfg = _cfg(tmp_path, {"frontelio": {"base_url": fake_frontelio.server.url, "api_key_file": str(frontelio_key_file)}},
               verify_budget_s=0.2)
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        decision = await _scan(daemon, CARD)
    assert decision.granted and not decision.online  # the cache answered: the upstream was too slow
    await wait_for(lambda: len(fake_frontelio.server.requests_to("/access/verify")) == 1, what="request seen")


async def test_5xx_storm_opens_the_circuit_then_it_closes(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom")
    fake_frontelio.server.fail_with(503)
    cfg = _cfg(tmp_path, {"frontelio": {"base_url": fake_frontelio.server.url, "api_key_file": str(frontelio_key_file)}})
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        for i in range(6):
            d = await _scan(daemon, CARD if i % 2 else REVOKED)
            assert not d.online
        # verify and heartbeat share the adapter's breaker: 3 failures of either kind open it. A
        # closed breaker lets calls already under way through, so the start heartbeat's retry can
        # be a 4th request when it left before the 3rd failure landed (seen under load); a verify
        # never is, and once open nothing more is asked.
        asked = len(fake_frontelio.server.requests)
        verifies = len(fake_frontelio.server.requests_to("/access/verify"))
        assert asked == 3 or (asked == 4 and verifies <= 2), "after 3 failures the breaker must stop asking"
        for unknown in ("DEAD0001", "DEAD0002"):  # new credentials: only the open breaker keeps them from the upstream
            assert not (await _scan(daemon, unknown)).online
        assert len(fake_frontelio.server.requests) == asked, "the open breaker must not ask"
        fake_frontelio.server.heal()
        # breaker_cooldown_s (1 s): the next scan is the half-open probe; and past the 2 s replay
        # window, or the door's own anti-bounce would answer the card's earlier (cache) decision.
        await asyncio.sleep(2.1)
        probe = await _scan(daemon, CARD)
        after = await _scan(daemon, REVOKED)
    assert probe.online and probe.granted
    assert after.online
    assert daemon.health.upstream.label == "online"


async def test_heartbeat_cadence_and_fields(tmp_path, fake_frontelio, frontelio_key_file):
    cfg = _cfg(tmp_path, {"frontelio": {"base_url": fake_frontelio.server.url, "api_key_file": str(frontelio_key_file)}})
    # The config refuses intervals under 10 s (a fleet must not hammer the central); the test
    # shortens it after validation to see several beats in a second.
    cfg = cfg.model_copy(update={"upstream": cfg.upstream.model_copy(
        update={"http": cfg.upstream.http.model_copy(update={"heartbeat_interval_s": 0.2})})})
    cfg = cfg.model_copy(update={"readers": make_config(tmp_path, Site(), [
        {"type": "serial", "id": READER, "port": "/dev/null-nonexistent"}]).readers})
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        await wait_for(lambda: len(fake_frontelio.heartbeats) >= 3, what="three heartbeats")
        assert daemon.health.upstream.last_heartbeat is not None
    beat = fake_frontelio.heartbeats[0]
    assert beat == {"readerId": READER, "firmwareVersion": __version__, "ipAddress": "127.0.0.1"}
    socket.inet_aton(beat["ipAddress"])


def _central_cfg(tmp_path, fake_central, central_key_file, **extra):
    cfg = make_config(tmp_path, Site(), [], bridge={"id": "BRIDGE-1"},
                      cache={"public_key": public_key_text(SIGNING_KEY.public_key())},
                      upstream={"http": {"retry_deadline_s": 3.0, "retry_max_wait_s": 0.2},
                                "central": {"base_url": fake_central.url, "api_key_file": str(central_key_file),
                                            "poll_interval_s": 1.0, "poll_jitter": 0.0, "replicate_idle_s": 0.1,
                                            "apply_in": "thread", **extra}})
    return cfg


async def test_revoked_upstream_means_deny_within_one_sync_interval(tmp_path, fake_central, central_key_file):
    records = door_records(READER, NOW)
    fake_central.publish_full(records)
    cfg = _central_cfg(tmp_path, fake_central, central_key_file)
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        await wait_for(lambda: _version(daemon) == 1, what="first sync")
        assert (await _scan(daemon, CARD)).granted
        grant = next(r for r in records if r.get("id") == "g1")
        fake_central.publish_delta([{**grant, "revoked": True}])
        await wait_for(lambda: _version(daemon) == 2, timeout=5,
                       what="the delta within one poll interval (1 s)")
        # Within 2 s of the first scan Frontelio's replay rule returns the original decision
        # (without a pulse); the next presentation after that is judged on the new grants.
        await asyncio.sleep(2.1)
        later = await _scan(daemon, "6b06c2a25e99c68edcbe")
    assert later.reason is Reason.GRANT_REVOKED and later.cache_version == 2


async def test_events_replicate_in_order_and_survive_a_connection_dropped_mid_batch(tmp_path, fake_central, central_key_file):
    fake_central.publish_full(door_records(READER, NOW))
    cfg = _central_cfg(tmp_path, fake_central, central_key_file, batch_size=20)
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        await wait_for(lambda: _version(daemon) == 1, what="first sync")
        fake_central.drop_mid_batch(after=7)
        for i in range(60):
            await _scan(daemon, f"FF{i:08X}")
        await daemon.quiesce()
        await wait_for(lambda: daemon.parts.outbox.depth() == 0, timeout=20, what="outbox drained")
        local = [e.id for e in daemon.parts.outbox.recent(1000)]
    stored = list(fake_central.events)
    assert sorted(stored) == sorted(local), "every event stored centrally"
    assert len(stored) == len(set(stored)), "nothing stored twice"
    assert fake_central.duplicates_seen, "the dropped batch was resent and deduplicated by id"
    assert stored == local, "in order"


async def test_a_bundle_key_rotated_by_reload_refuses_bundles_signed_with_the_old_key(tmp_path, fake_central, central_key_file):
    """`cache.public_key` changed and SIGHUP: every later bundle must verify with the new key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    fake_central.publish_full(door_records(READER, NOW))
    cfg = _central_cfg(tmp_path, fake_central, central_key_file)
    new_key = Ed25519PrivateKey.generate()
    rotated = cfg.model_copy(update={"cache": cfg.cache.model_copy(update={"public_key": public_key_text(new_key.public_key())})})
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        await wait_for(lambda: _version(daemon) == 1, what="first sync")
        assert "cache" not in daemon.reload(rotated)
        fake_central.publish_full(door_records(READER, NOW))  # v2, still signed with the old key
        # (reload reconfigures logging, so the refusal is read off the sync's state, as `status` does)
        await wait_for(lambda: "does not verify" in (daemon.parts.sync.state.last_error or ""), timeout=5,
                       what="the old-key bundle refused")
        assert _version(daemon) == 1
        fake_central.signing_key = new_key
        fake_central.publish_full(door_records(READER, NOW))  # v3, signed with the new key
        await wait_for(lambda: _version(daemon) == 3, timeout=5, what="the new-key bundle applied")


async def test_a_cache_file_deleted_under_the_daemon_is_reopened_and_revocations_hold(tmp_path, fake_central, central_key_file):
    """grants.db deleted (or replaced) while running: decisions and the sync must follow the file
    the applier writes, not stay on the orphaned inode where the card is still granted."""
    records = door_records(READER, NOW)
    fake_central.publish_full(records)
    cfg = _central_cfg(tmp_path, fake_central, central_key_file)
    async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
        await wait_for(lambda: _version(daemon) == 1, what="first sync")
        assert (await _scan(daemon, CARD)).granted
        for name in ("grants.db", "grants.db-wal", "grants.db-shm"):
            (daemon.state_dir / name).unlink(missing_ok=True)
        grant = next(r for r in records if r.get("id") == "g1")
        fake_central.publish_delta([{**grant, "revoked": True}])
        await wait_for(lambda: _version(daemon) == 2, timeout=8, what="the new cache file synced to version 2")
        await asyncio.sleep(2.1)  # past the replay window of the first scan
        later = await _scan(daemon, "6b06c2a25e99c68edcbe")
    assert later.reason is Reason.GRANT_REVOKED and later.cache_version == 2
    assert daemon.parts.cache.reopened >= 1
