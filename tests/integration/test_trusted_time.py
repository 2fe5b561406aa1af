"""Trusted time: the pure floor, and the daemon deciding with it when the wall clock is a year behind."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from verifier.trusted_time import JUMP_MS, TOLERANCE_MS, TrustedTime

YEAR_MS = 365 * 86_400_000


def test_a_wall_clock_a_year_behind_the_floor_is_untrusted_and_the_floor_decides() -> None:
    t = TrustedTime(floor_ms=10 * YEAR_MS, mono_s=100.0)
    r = t.read(9 * YEAR_MS, mono_s=160.0)
    assert not r.trusted and r.instant_ms == 10 * YEAR_MS + 60_000 and r.behind_ms == YEAR_MS + 60_000


def test_skew_within_the_tolerance_is_trusted_and_the_wall_clock_stands() -> None:
    t = TrustedTime(floor_ms=1_000_000, mono_s=0.0)
    r = t.read(1_000_000 - TOLERANCE_MS // 2, mono_s=0.0)
    assert r.trusted and r.instant_ms == 1_000_000 - TOLERANCE_MS // 2


def test_the_floor_only_rises() -> None:
    t = TrustedTime(floor_ms=5_000, mono_s=0.0)
    t.raise_floor(1_000, mono_s=0.0)
    assert t.floor_now(0.0) == 5_000
    t.raise_floor(9_000, mono_s=1.0)
    assert t.floor_now(2.0) == 10_000


def test_a_jump_against_monotonic_time_is_reported() -> None:
    t = TrustedTime()
    t.read(1_000_000, mono_s=0.0)
    assert t.read(1_000_000 + JUMP_MS + 1_000, mono_s=1.0).jump_ms == JUMP_MS
    assert t.read(1_000_000 + JUMP_MS + 2_000, mono_s=2.0).jump_ms == 0


@given(floor=st.integers(0, 100 * YEAR_MS), wall=st.integers(0, 100 * YEAR_MS), elapsed=st.floats(0, 1e6))
def test_the_instant_is_never_below_the_floor_nor_the_wall(floor: int, wall: int, elapsed: float) -> None:
    t = TrustedTime(floor, mono_s=0.0)
    r = t.read(wall, mono_s=elapsed)
    assert r.instant_ms >= t.floor_now(elapsed) - TOLERANCE_MS and r.instant_ms >= wall
    assert r.trusted == (t.floor_now(elapsed) - wall <= TOLERANCE_MS)


# --- through the daemon ---------------------------------------------------------------------------

import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bridge.inputs.base import Scan  # noqa: E402
from tests.support.harness import Site, door_records, iso, make_config, running, wait_for  # noqa: E402
from verifier.types import Reason, Source  # noqa: E402

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
READER = "FRONT"
EXPIRED = "ABCDEF12"


def _site(tmp_path: Path):
    site = Site()
    card = {"type": "card", "number": EXPIRED, "devices": [READER],
            "start_at": iso(NOW - timedelta(days=730)), "end_at": iso(NOW - timedelta(days=180))}
    site.install(tmp_path, door_records(READER, NOW) + [card], now=NOW, days=30)
    return make_config(tmp_path, site, [])


class YearBehind:
    """A Pi booted without RTC or NTP: the wall clock a year before the bundle was issued."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        return NOW - timedelta(days=365) + timedelta(seconds=time.monotonic() - self._t0)


async def test_a_clock_a_year_behind_the_signed_bundle_decides_with_the_floor(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    async with running(cfg, clock=YearBehind()) as (daemon, _):
        daemon.parts.reader_door[READER] = "main"
        decision = await daemon.pipeline.handle(Scan(READER, Source.CARD, EXPIRED.encode()))
        assert decision.reason is Reason.OUT_OF_DATE_WINDOW  # at the wall clock it was inside its window
        await wait_for(lambda: any(e.type == "CLOCK_UNTRUSTED" for e in daemon.parts.outbox.recent(50)),
                       timeout=8, what="a CLOCK_UNTRUSTED audit event")
        snap = daemon.health.snapshot()
        assert snap["clock"]["trusted"] is False and snap["clock"]["behind_floor_s"] > 300 * 86400
        assert "CLOCK UNTRUSTED" in daemon.health.status_line()
        assert not daemon.clock_trusted()


async def test_the_floor_survives_a_restart_through_the_saved_floor_and_the_audit_log(tmp_path: Path) -> None:
    cfg = _site(tmp_path)

    class Right:
        def __call__(self) -> datetime:
            return NOW + timedelta(days=10)

    async with running(cfg, clock=Right()) as (daemon, _):
        daemon.parts.reader_door[READER] = "main"
        await daemon.pipeline.handle(Scan(READER, Source.CARD, b"0000FFFF"))
    async with running(cfg, clock=YearBehind()) as (daemon, _):
        # the last audit event (NOW + 10 days) is the floor now, not the older issued_at
        assert daemon.clock_watch.trusted_time.floor_ms >= int((NOW + timedelta(days=10)).timestamp() * 1000)
        assert daemon.clock() >= NOW + timedelta(days=10)
