"""Every wrong secret at a reader is a guess, whatever the cache holds (issue 10, High 2).

A real daemon (MockFactory pins, real SQLite files, a serial reader on a real pty) and real
offline passcodes: with the cache fresh, stale (past not_after) and empty (never synced), wrong
codes lock the keypad bucket, the lock is an audit event of its own, and a right code entered
during the lock does not open the door.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.inputs.base import Scan
from tests.support.harness import T0, Site, door_records, make_config, relay_pulses, running
from verifier.passcode import mint
from verifier.types import Reason, Source

READER = "KP-1"
SECRET = b"offline-passcode-secret-0123456789"


def _config(state: Path, site: Site, pty_path: str, **policy: object):
    secret = state.parent / "passcode.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    return make_config(
        state, site, [{"type": "serial", "id": READER, "door": "main", "port": pty_path}],
        doors={"main": {"relay_pin": 17, "pulse_s": 0.3, "passcode_secret_file": str(secret)}},
        policy={"rate_limit_denies": 5, "rate_limit_window_s": 60, "rate_limit_cooldown_s": 30, "replay_window_s": 0,
                **policy},
    )


@pytest.fixture
def pty_path():
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def _wrong_codes(n: int) -> list[str]:
    good = mint(SECRET, "main", T0 - timedelta(hours=1), T0 + timedelta(hours=5))
    return [f"{(int(good) + 1 + i) % 10**12:012d}" for i in range(n)]


@pytest.mark.parametrize("cache", ["fresh", "stale", "empty"])
def test_wrong_offline_codes_lock_the_keypad_whatever_the_cache(tmp_path: Path, pty_path: str, cache: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    site = Site()
    if cache == "fresh":
        site.install(state, door_records(READER))
    elif cache == "stale":
        site.install(state, door_records(READER), now=T0 - timedelta(days=30), days=7)
    config = _config(state, site, pty_path)
    good = mint(SECRET, "main", T0 - timedelta(hours=1), T0 + timedelta(hours=5))
    reasons: list[Reason | None] = []

    async def attack() -> tuple[list[dict], list[float]]:
        async with running(config, clock=lambda: T0) as (daemon, pins):
            for code in _wrong_codes(5):
                reasons.append((await daemon.pipeline.handle(Scan(READER, Source.KEYPAD, code.encode(), "pin"))).reason)
            locked = await daemon.pipeline.handle(Scan(READER, Source.KEYPAD, good.encode(), "pin"))
            reasons.append(locked.reason)
            await daemon.quiesce()
            rows = [e.body | {"type": e.type} for e in daemon.parts.outbox.recent(100)]
            return rows, relay_pulses(pins.pin(17))

    rows, pulses = asyncio.run(attack())
    assert Reason.RATE_LIMITED not in reasons[:5]
    assert reasons[5] is Reason.RATE_LIMITED, f"the right code after 5 wrong ones must wait out the lock ({cache})"
    assert pulses == []
    (alert,) = [r for r in rows if r["type"] == "READER_RATE_LIMITED"]
    assert (alert["readerId"], alert["bucket"], alert["denies"], alert["cooldownS"]) == (READER, "keypad", 5, 30.0)
    assert alert["bridgeId"] == "BRIDGE-T" and alert["lockedUntil"].startswith("2026-06-01T09:00:30")


def test_the_right_code_still_opens_once_the_cooldown_has_passed(tmp_path: Path, pty_path: str) -> None:
    """The lock is a delay, not a denial of service forever: same empty cache, 31 s later."""
    state = tmp_path / "state"
    state.mkdir()
    config = _config(state, Site(), pty_path)
    now = [T0]
    good = mint(SECRET, "main", T0 - timedelta(hours=1), T0 + timedelta(hours=5))

    async def run() -> tuple[Reason | None, bool]:
        async with running(config, clock=lambda: now[0]) as (daemon, _pins):
            for code in _wrong_codes(5):
                await daemon.pipeline.handle(Scan(READER, Source.KEYPAD, code.encode(), "pin"))
            now[0] = T0 + timedelta(seconds=31)
            d = await daemon.pipeline.handle(Scan(READER, Source.KEYPAD, good.encode(), "pin"))
            return d.reason, d.granted

    assert asyncio.run(run()) == (None, True)


def test_stale_card_scans_do_not_lock_out_cardholders(tmp_path: Path, pty_path: str) -> None:
    """Only a typed code can open a stale door, so only the keypad bucket counts CACHE_STALE."""
    state = tmp_path / "state"
    state.mkdir()
    site = Site()
    site.install(state, door_records(READER), now=T0 - timedelta(days=30), days=7)
    config = _config(state, site, pty_path)

    async def run() -> list[Reason | None]:
        async with running(config, clock=lambda: T0) as (daemon, _pins):
            return [(await daemon.pipeline.handle(Scan(READER, Source.CARD, f"{0xC0DE00 + i:08X}".encode(), "card"))).reason
                    for i in range(10)]

    assert set(asyncio.run(run())) == {Reason.CACHE_STALE}


@pytest.mark.parametrize("accept_pins", [False, True])
def test_a_scanned_line_that_is_a_pin_is_refused_unless_the_reader_takes_pins(
        tmp_path: Path, pty_path: str, accept_pins: bool) -> None:
    """A QR code typing "CODE#" is not a faster keypad: refused (MALFORMED) at a plain scanner."""
    state = tmp_path / "state"
    state.mkdir()
    config = _config(state, Site(), pty_path)
    config = config.model_copy(update={"readers": [config.readers[0].model_copy(update={"accept_pins": accept_pins})]})
    good = mint(SECRET, "main", T0 - timedelta(hours=1), T0 + timedelta(hours=5))

    async def run():
        async with running(config, clock=lambda: T0) as (daemon, _pins):
            d = await daemon.pipeline.handle(Scan(READER, Source.PHONE_QR, (good + "#").encode(), None))
            return d

    d = asyncio.run(run())
    if accept_pins:
        assert d.granted
    else:
        assert (d.granted, d.reason) == (False, Reason.MALFORMED_CREDENTIAL)


def test_a_flooding_reader_cannot_starve_another_readers_scans(tmp_path: Path, pty_path: str, monkeypatch) -> None:
    """Issue 10, Medium 7: the in-flight bound is per reader as well as global."""
    from bridge.service import scan_pipeline as pipeline_mod

    monkeypatch.setattr(pipeline_mod, "MAX_SCANS_IN_FLIGHT", 60)
    monkeypatch.setattr(pipeline_mod, "MAX_SCANS_IN_FLIGHT_PER_READER", 40)
    state = tmp_path / "state"
    state.mkdir()
    site = Site()
    site.install(state, door_records(READER) + door_records("R-2"))
    config = _config(state, site, pty_path)

    async def run() -> tuple[int, int, int]:
        async with running(config, clock=lambda: T0) as (daemon, _pins):
            before = daemon.health.stats.decisions
            # All in one turn of the loop: nothing is decided yet, so every scan is in flight.
            for i in range(500):
                daemon.pipeline.spawn(Scan(READER, Source.PHONE_QR, b"junk junk", None))
            for i in range(20):
                daemon.pipeline.spawn(Scan("R-2", Source.CARD, b"6B06C2A25E99C68EDCBE", "card"))
            await daemon.quiesce()
            second = daemon.health.stats.readers["R-2"].scans if "R-2" in daemon.health.stats.readers else 0
            return second, daemon.pipeline.dropped_by_reader[READER], daemon.health.stats.decisions - before

    second, dropped_flood, decided = asyncio.run(run())
    assert second == 20, "every scan of the second reader was decided"
    assert dropped_flood == 460 and decided == 60
