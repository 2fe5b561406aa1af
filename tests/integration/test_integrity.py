"""Damaged state databases are found at start, moved aside, and the door holds its fail mode."""

from __future__ import annotations

import os

from structlog.testing import capture_logs

from tests.support.harness import SetClock, Site, door_records, make_config, running, wait_for
from verifier.types import Reason

READER = "R-int"


async def _scan(daemon, text):
    from bridge.inputs.base import Scan
    from verifier.types import Source

    return await daemon.pipeline.handle(Scan(READER, Source.CARD, text.encode()))


async def test_corrupted_grant_cache_is_quarantined_and_the_door_denies_until_resynced(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    cfg = make_config(tmp_path, site, [])
    async with running(cfg, clock=SetClock()) as (daemon, _):
        daemon.parts.reader_door[READER] = "main"
        assert (await _scan(daemon, "6B06C2A25E99C68EDCBE")).granted
    path = tmp_path / "grants.db"
    with open(path, "r+b") as f:  # scribble over the middle of the file, as a bad sector would
        f.seek(4096 + 100)
        f.write(os.urandom(8192))
    with capture_logs() as logs:
        async with running(cfg, clock=SetClock()) as (daemon, factory):
            daemon.parts.reader_door[READER] = "main"
            decision = await _scan(daemon, "6B06C2A25E99C68EDCBE")
            assert decision.reason is Reason.CACHE_STALE
            assert not any(s.state for s in factory.pin(17).states), "fail-secure: relay never energised"
            await daemon.quiesce()
            events = [e for e in daemon.parts.outbox.recent(50) if e.type == "STATE_DB_QUARANTINED"]
    assert [e.body["file"] for e in events] == ["grants.db"]
    assert any(p.name.startswith("grants.db.corrupt-") for p in tmp_path.iterdir())
    assert any(entry["event"] == "state_db_quarantined" and entry["log_level"] == "error" for entry in logs)
    # the next signed bundle (a re-sync) restores service
    site.install(tmp_path, door_records(READER))
    async with running(cfg, clock=SetClock()) as (daemon, _):
        daemon.parts.reader_door[READER] = "main"
        assert (await _scan(daemon, "6B06C2A25E99C68EDCBE")).granted


async def test_truncated_audit_db_is_quarantined_not_overwritten(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    cfg = make_config(tmp_path, site, [])
    async with running(cfg, clock=SetClock()) as (daemon, _):
        daemon.parts.reader_door[READER] = "main"
        for _ in range(50):
            await _scan(daemon, "FFFF0000AAAA")
    audit = tmp_path / "audit.db"
    size = audit.stat().st_size
    with open(audit, "r+b") as f:
        f.truncate(size // 2)
    async with running(cfg, clock=SetClock()) as (daemon, _):
        await wait_for(lambda: daemon.parts.outbox.depth() >= 1)
        quarantined = [p for p in tmp_path.iterdir() if p.name.startswith("audit.db.corrupt-") and p.name[-4:] not in ("-wal", "-shm")]
        assert quarantined and quarantined[0].stat().st_size == size // 2
        await daemon.quiesce()
        assert [e.body["file"] for e in daemon.parts.outbox.recent(10) if e.type == "STATE_DB_QUARANTINED"] == ["audit.db"]
