"""The scan pipeline's one ordering rule: the audit row that explains the relay is on disk (committed,
readable by another connection) before the relay moves, and a row that cannot be written moves
nothing. A real daemon in-process, a real SQLite outbox, MockFactory pins."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.inputs.base import Scan
from bridge.state.outbox import OutboxWriteError
from tests.support.harness import SetClock, Site, door_records, make_config, running
from verifier.types import Source

READER = "R-pipe"
CARD = "6B06C2A25E99C68EDCBE"  # door_records: user_ok's card, granted at zone_a


def _verify_rows(audit: Path) -> list[str]:
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as c:
        return [row[0] for row in c.execute("SELECT body FROM events WHERE type = 'VERIFY' ORDER BY seq")]


async def test_the_decision_row_is_on_disk_before_the_relay_moves(tmp_path: Path) -> None:
    site = Site()
    site.install(tmp_path, door_records(READER))
    async with running(make_config(tmp_path, site, []), clock=SetClock()) as (daemon, factory):
        daemon.reader_door[READER] = "main"
        relay = daemon.doors["main"]
        seen_at_pulse: list[list[str]] = []
        pulse = relay.pulse

        def watched_pulse() -> None:
            assert not factory.pin(17).state, "the relay is still released when pulse() is called"
            seen_at_pulse.append(_verify_rows(tmp_path / "audit.db"))
            pulse()

        relay.pulse = watched_pulse  # type: ignore[method-assign]
        decision = await daemon.handle(Scan(READER, Source.CARD, CARD.encode()))
        assert decision.granted
        assert len(seen_at_pulse) == 1
        rows = seen_at_pulse[0]
        assert len(rows) == 1 and '"decision":"GRANT"' in rows[0].replace(" ", "")


async def test_a_row_that_cannot_be_written_moves_nothing(tmp_path: Path) -> None:
    site = Site()
    site.install(tmp_path, door_records(READER))
    async with running(make_config(tmp_path, site, []), clock=SetClock()) as (daemon, factory):
        daemon.reader_door[READER] = "main"

        def full_disk(*_a, **_kw):
            raise OutboxWriteError("database or disk is full")

        daemon.outbox.append_many = full_disk  # type: ignore[method-assign]
        with pytest.raises(Exception):
            await daemon.handle(Scan(READER, Source.CARD, CARD.encode()))
        assert not any(s.state for s in factory.pin(17).states), "fail-secure: the relay never moved"
