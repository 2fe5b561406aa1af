"""The learned offline cache, through the running daemon against the loopback Frontelio and SNA fakes.

A site on Frontelio or SNA has no signed bundle: before the learned cache, every credential was
`DENY CACHE_STALE` the moment the central became unreachable. Each test here takes the path a
door takes: an online answer, the central stopped (its loopback server really down), the same
credential presented again, the clock moved past a limit, a daemon restarted, an SD-card edit.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import jwt
import pytest
from structlog.testing import capture_logs

from bridge.inputs.base import Scan
from tests.support.builders import NOW
from tests.support.fakes.digital_id import employee
from tests.support.fakes.fixtures import (  # noqa: F401  (pytest fixtures)
    fake_digital_id,
    fake_frontelio,
    fake_sna,
    frontelio_key_file,
)
from tests.support.fakes.frontelio import Holder, add_webhook
from tests.support.harness import RunningClock, Site, door_records, iso, make_config, running, wait_for
from verifier.types import Reason, Source

READER = "BRIDGE-1"
CARD, OTHER = "6B06C2A25E99C68EDCBE", "ABCDEF0123"
WEBHOOK_SECRET = "whsec_test_4b1d6e0a9c2f"


def credential_jwt(sub: str, exp_in: timedelta, **claims) -> str:
    """A Frontelio-style 24 h credential (HS256 under Frontelio's secret, which the door never has)."""
    return jwt.encode({"sub": sub, "exp": int((NOW + exp_in).timestamp()), **claims}, "frontelio-side-secret-32-bytes!!",
                      algorithm="HS256")


def _cfg(tmp_path, upstream, *, offline=None, bundle=False, mode="online-first"):
    site = Site()
    if bundle:
        site.install(tmp_path, door_records(READER, NOW), now=NOW)
    sections = {"bridge": {"id": "BRIDGE-1", "mode": mode},
                "upstream": {"http": {"verify_budget_s": 0.5, "breaker_failures": 50, "retry_max_wait_s": 0.2,
                                      "retry_deadline_s": 2.0}, **upstream}}
    if offline is not None:
        sections["offline"] = offline
    return make_config(tmp_path, site, [], **sections)


def _frontelio(fake, key_file):
    return {"frontelio": {"base_url": fake.server.url, "api_key_file": str(key_file)}}


def _frontelio_granting(tmp_path, fake, key_file, **kw):
    """A Frontelio site (no bundle) whose central grants CARD; the config and a test clock."""
    fake.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom")
    return _cfg(tmp_path, _frontelio(fake, key_file), **kw), RunningClock(NOW)


async def _scan(daemon, text, source=Source.CARD):
    daemon.parts.reader_door.setdefault(READER, "main")
    return await daemon.pipeline.handle(Scan(READER, source, text.encode()))


def _verify_rows(daemon):
    return [e.body for e in daemon.parts.outbox.recent(1000) if e.type == "VERIFY"]


async def test_frontelio_jwt_granted_online_opens_offline_until_its_exp(tmp_path, fake_frontelio, frontelio_key_file):
    token = credential_jwt("user_abc", timedelta(hours=1))
    fake_frontelio.credentials[token] = Holder("user_abc", "Layla Hassan", "Stockroom")
    clock = RunningClock(NOW)
    with capture_logs() as logs:
        async with running(_cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file)), clock=clock) as (daemon, _):
            online = await _scan(daemon, token, Source.PHONE_NFC)
            fake_frontelio.server.stop()
            clock.advance(minutes=10)
            offline = await _scan(daemon, token, Source.PHONE_NFC)
            clock.advance(minutes=51)  # past exp (1 h), well inside max_age (4 h)
            expired = await _scan(daemon, token, Source.PHONE_NFC)
            await daemon.quiesce()
            rows = _verify_rows(daemon)
            status = daemon.health.snapshot()
    assert (online.granted, online.decided) == (True, "online")
    assert (offline.granted, offline.decided, offline.user_name, offline.zone_name) == (True, "learned", "Layla Hassan", "Stockroom")
    assert (expired.reason, expired.decided) == (Reason.CREDENTIAL_EXPIRED, "learned")
    assert [r["decided"] for r in rows] == ["online", "learned", "learned"]
    lines = [e for e in logs if e["event"] == "decision"]
    assert [(e["decided"], e["decision"], e["reason"]) for e in lines] == [
        ("online", "GRANT", "-"), ("learned", "GRANT", "-"), ("learned", "DENY", "CREDENTIAL_EXPIRED")]
    assert status["decisions"]["learned"] == 2 and status["learned"]["entries"] == 1


async def test_sna_card_offline_follows_its_end_at(tmp_path, fake_sna):
    clock = RunningClock(NOW)
    fake_sna.now = clock
    fake_sna.cards[CARD] = {"number": CARD, "name": "Guest Card", "devices": ["SN-0042"],
                            "start_at": "2026-05-30T00:00:00", "end_at": iso(NOW + timedelta(minutes=30))}
    cfg = _cfg(tmp_path, {"sna": {"base_url": fake_sna.server.url, "device_sn": "SN-0042"}})
    async with running(cfg, clock=clock) as (daemon, _):
        online = await _scan(daemon, CARD)
        fake_sna.server.stop()
        clock.advance(minutes=10)
        offline = await _scan(daemon, CARD)
        unknown = await _scan(daemon, OTHER)
        clock.advance(minutes=21)  # past end_at
        after = await _scan(daemon, CARD)
    assert online.granted and online.online
    assert (offline.granted, offline.decided, offline.user_name) == (True, "learned", "Guest Card")
    assert (unknown.reason, unknown.decided) == (Reason.CACHE_STALE, "cache")  # never seen online: nothing learned
    assert (after.reason, after.decided) == (Reason.OUT_OF_DATE_WINDOW, "learned")


async def test_frontelio_card_is_capped_by_max_age(tmp_path, fake_frontelio, frontelio_key_file):
    cfg, clock = _frontelio_granting(tmp_path, fake_frontelio, frontelio_key_file, offline={"frontelio": {"max_age_s": 600}})
    async with running(cfg, clock=clock) as (daemon, _):
        assert (await _scan(daemon, CARD)).online
        fake_frontelio.server.stop()
        clock.advance(minutes=5)
        inside = await _scan(daemon, CARD)
        clock.advance(minutes=6)
        outside = await _scan(daemon, CARD)
    assert (inside.granted, inside.decided) == (True, "learned")
    assert (outside.reason, outside.decided) == (Reason.CACHE_STALE, "learned")


async def test_an_online_deny_after_a_learned_grant_wins_at_once(tmp_path, fake_frontelio, frontelio_key_file):
    cfg, clock = _frontelio_granting(tmp_path, fake_frontelio, frontelio_key_file)
    async with running(cfg, clock=clock) as (daemon, _):
        assert (await _scan(daemon, CARD)).granted
        assert daemon.parts.learned.store.count() == 1
        fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom", "GRANT_REVOKED")
        await asyncio.sleep(2.1)  # past Frontelio's 2 s replay rule: a fresh verdict
        revoked = await _scan(daemon, CARD)
        assert daemon.parts.learned.store.count() == 0
        fake_frontelio.server.stop()
        clock.advance(minutes=1)
        offline = await _scan(daemon, CARD)
    assert (revoked.reason, revoked.decided) == (Reason.GRANT_REVOKED, "online")
    assert not offline.granted and offline.decided == "cache"


async def test_learned_entries_survive_a_restart(tmp_path, fake_frontelio, frontelio_key_file):
    cfg, clock = _frontelio_granting(tmp_path, fake_frontelio, frontelio_key_file)
    async with running(cfg, clock=clock) as (daemon, _):
        assert (await _scan(daemon, CARD)).online
    fake_frontelio.server.stop()
    clock.advance(minutes=30)
    async with running(cfg, clock=clock) as (daemon, _):
        await asyncio.to_thread(daemon.health.read_storage)
        status = daemon.health.snapshot()
        again = await _scan(daemon, CARD)
    assert (again.granted, again.decided, again.user_name) == (True, "learned", "Layla Hassan")
    assert status["learned"]["entries"] == 1
    assert status["learned"]["upstreams"]["frontelio"] == {"entries": 1, "oldest_learned_at": NOW.isoformat(timespec="seconds")}


@pytest.mark.parametrize("edit", [
    "UPDATE learned SET expires_ms = expires_ms + 86400000",
    "UPDATE learned SET user_name = 'Someone Else'",
    "INSERT INTO learned SELECT randomblob(32), upstream, reader_id, credential_kind, user_id, user_name, zone_name, "
    "learned_ms, expires_ms, expires_reason, starts_ms, devices, used_ms, seal FROM learned",
])
async def test_a_hand_edited_learned_entry_is_refused(tmp_path, fake_frontelio, frontelio_key_file, edit):
    cfg, clock = _frontelio_granting(tmp_path, fake_frontelio, frontelio_key_file)
    async with running(cfg, clock=clock) as (daemon, _):
        assert (await _scan(daemon, CARD)).online
    with sqlite3.connect(tmp_path / "learned.db") as db:
        db.execute(edit)
    fake_frontelio.server.stop()
    with capture_logs() as logs:
        async with running(cfg, clock=clock) as (daemon, _):
            decision = await _scan(daemon, CARD)
            await daemon.quiesce()
            refused = [e.body for e in daemon.parts.outbox.recent(50) if e.type == "LEARNED_ENTRY_REFUSED"]
    refusals = [e for e in logs if e["event"] == "learned_entry_refused"]
    if edit.startswith("INSERT"):
        # The copy under a made-up key is refused; the genuine row still answers.
        assert (decision.granted, decision.decided) == (True, "learned")
    else:
        assert (decision.granted, decision.decided) == (False, "cache")
    assert len(refusals) == 1 and len(refused) == 1
    assert refused[0]["upstream"] == "frontelio" and refused[0]["readerId"] == READER


async def test_learn_false_keeps_sna_literal(tmp_path, fake_sna):
    clock = RunningClock(NOW)
    fake_sna.now = clock
    fake_sna.cards[CARD] = {"number": CARD, "name": "Guest Card", "devices": ["SN-0042"]}
    cfg = _cfg(tmp_path, {"sna": {"base_url": fake_sna.server.url, "device_sn": "SN-0042"}}, offline={"learn": False})
    async with running(cfg, clock=clock) as (daemon, _):
        assert (await _scan(daemon, CARD)).granted
        fake_sna.server.stop()
        clock.advance(seconds=3)  # past the door's replay window, which holds for online decisions too
        offline = await _scan(daemon, CARD)
        assert daemon.parts.learned.store.count() == 0
    assert (offline.reason, offline.decided) == (Reason.CACHE_STALE, "cache")


async def test_the_signed_cache_stays_the_authority_for_what_it_covers(tmp_path, fake_frontelio, frontelio_key_file):
    # The bundle: CARD has a grant, 04A22C1A7B3F80 a revoked one. Frontelio (say, lagging)
    # grants both and an unknown card; offline, the bundle's verdicts stand, the learned cache
    # answers only the card the bundle does not know.
    revoked = "04A22C1A7B3F80"
    for number in (CARD, revoked, OTHER):
        fake_frontelio.credentials[number] = Holder("user_x", "Someone", "Stockroom")
    clock = RunningClock(NOW)
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file), bundle=True)
    async with running(cfg, clock=clock) as (daemon, _):
        for number in (CARD, revoked, OTHER):
            assert (await _scan(daemon, number)).online
        fake_frontelio.server.stop()
        clock.advance(minutes=1)
        known, bundle_revoked, learned = [await _scan(daemon, n) for n in (CARD, revoked, OTHER)]
    assert (known.granted, known.decided, known.user_name) == (True, "cache", "Layla Hassan")
    assert (bundle_revoked.reason, bundle_revoked.decided) == (Reason.GRANT_REVOKED, "cache")
    assert (learned.granted, learned.decided) == (True, "learned")


async def test_digital_id_is_never_learned(tmp_path, fake_frontelio, frontelio_key_file, fake_digital_id):
    fake_digital_id.tokens["tok_valid_123"] = ("valid", employee(123, "John Smith"))
    upstream = {**_frontelio(fake_frontelio, frontelio_key_file),
                "digital_id": {"base_url": fake_digital_id.server.url, "location": "Main_Entrance"}}
    qr = "https://id.example/verify.php?token=tok_valid_123"
    clock = RunningClock(NOW)
    async with running(_cfg(tmp_path, upstream), clock=clock) as (daemon, _):
        assert (await _scan(daemon, qr, Source.PHONE_QR)).granted
        fake_digital_id.server.stop()
        clock.advance(seconds=3)  # past the door's replay window, which holds for online decisions too
        offline = await _scan(daemon, qr, Source.PHONE_QR)
        assert daemon.parts.learned.store.count() == 0
    assert (offline.reason, offline.decided) == (Reason.UPSTREAM_UNAVAILABLE, "cache")


async def test_offline_decisions_reach_the_webhook_signed_in_order_once(tmp_path, fake_frontelio, frontelio_key_file):
    hook = add_webhook(fake_frontelio, "integ_abc", WEBHOOK_SECRET)
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    secret_file.chmod(0o600)
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom")
    clock = RunningClock(NOW)
    cfg = _cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file),
               offline={"webhook": {"integration_id": "integ_abc", "secret_file": str(secret_file), "idle_s": 0.05}})
    async with running(cfg, clock=clock) as (daemon, _):
        assert (await _scan(daemon, CARD)).online
        port = fake_frontelio.server.port
        fake_frontelio.server.stop()
        for i in range(12):
            clock.advance(seconds=3)  # past the replay window: each presentation is decided afresh
            await _scan(daemon, CARD if i % 3 else f"FF{i:08X}")
        await daemon.quiesce()
        await asyncio.sleep(0.3)  # the hand-back tries, fails, backs off: nothing may be skipped
        fake_frontelio.server.port = port
        fake_frontelio.server.come_up()
        await wait_for(lambda: len(hook.events) >= 12, timeout=15, what="12 offline decisions at the webhook")
        await asyncio.sleep(0.3)  # anything more would be a double
        offline_ids = [e.id for e in daemon.parts.outbox.recent(1000) if e.type == "VERIFY" and not e.body["online"]]
        status = daemon.health.snapshot()
    assert [e["id"] for e in hook.events] == offline_ids, "every offline decision, in order"
    assert hook.duplicates == 0 and hook.bad_signatures == 0
    assert [e["decided"] for e in hook.events].count("learned") == 8
    first = hook.events[1]
    assert first["type"] == "door_bridge.offline_decision" and first["readerId"] == READER
    assert first["decision"] == "GRANT" and first["userName"] == "Layla Hassan"
    assert CARD not in str(hook.events), "no credential in the payload"
    assert status["handback"]["delivered"] == 12


async def test_lowering_max_age_on_reload_applies_to_entries_already_learned(tmp_path, fake_frontelio, frontelio_key_file):
    cfg, clock = _frontelio_granting(tmp_path, fake_frontelio, frontelio_key_file)
    async with running(cfg, clock=clock) as (daemon, _):
        assert (await _scan(daemon, CARD)).online
        fake_frontelio.server.stop()
        clock.advance(minutes=20)
        before = await _scan(daemon, CARD)
        restart = daemon.reload(cfg.model_copy(update={"offline": cfg.offline.model_copy(update={"max_age_s": 600.0})}))
        clock.advance(seconds=3)
        after = await _scan(daemon, CARD)
    assert before.granted and "offline" not in restart
    assert (after.reason, after.decided) == (Reason.CACHE_STALE, "learned")


async def test_a_learned_cache_that_cannot_write_never_blocks_the_online_answer(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Stockroom")
    async with running(_cfg(tmp_path, _frontelio(fake_frontelio, frontelio_key_file)), clock=RunningClock(NOW)) as (daemon, factory):
        daemon.parts.learned.store.conn.execute("PRAGMA query_only = 1")  # every write now fails inside SQLite
        with capture_logs() as logs:
            decision = await _scan(daemon, CARD)
            await daemon.quiesce()
        relay = factory.pin(17)
    assert decision.granted and decision.online
    assert any(s.state for s in relay.states), "the relay pulsed for the online GRANT"
    assert [e["event"] for e in logs if e["event"].startswith("learned_")] == ["learned_write_failed"]


def test_a_sigkilled_daemon_keeps_what_it_learned(tmp_path, fake_frontelio, frontelio_key_file):
    """A real `door-bridge run` process: the online GRANT's row is on disk (fsync'd) before the
    relay moves, so a SIGKILL right after it loses nothing; the restarted daemon, its central
    gone, grants the same card from what it learned."""
    import stat

    from tests.support.service import Service

    fake_frontelio.credentials[OTHER] = Holder("user_abc", "Layla Hassan", "Stockroom")
    svc = Service(tmp_path)
    text = svc.config.read_text().replace("[bridge]\n", '[bridge]\nmode = "online-first"\n', 1)
    svc.config.write_text(text + "[upstream.http]\nverify_budget_s = 0.5\nretry_deadline_s = 1.0\n"
                          f'[upstream.frontelio]\nbase_url = "{fake_frontelio.server.url}"\n'
                          f'api_key_file = "{frontelio_key_file}"\n')
    try:
        svc.start()
        svc.pty.type(OTHER)
        svc.wait_log("decided=online")
        svc.kill()
        fake_frontelio.server.stop()
        svc.restart()
        svc.pty.type(OTHER)
        svc.wait_log("decided=learned")
        line = next(x for x in svc.output().splitlines() if "decided=learned" in x)
        status = svc.status()
        secret = (svc.state / "learned.key").read_text().strip()
    finally:
        svc.close()
    assert "decision=GRANT" in line and "relay=pulsed" in line and OTHER not in svc.output()
    assert status["learned"]["entries"] == 1 and status["decisions"]["learned"] == 1
    assert stat.S_IMODE((svc.state / "learned.key").stat().st_mode) == 0o600
    assert len(secret) == 64 and secret not in svc.output() and secret[:16] not in svc.output()
