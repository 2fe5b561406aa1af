"""The daemon's one clock: the wall clock, unless it is behind what is known to have happened.

Every instant the daemon decides with comes through the trusted-time floor (verifier/trusted_time.py,
docs/trusted-time.md). A Pi has no RTC: after a power cut it may boot in 1970 or last week until NTP
answers, and a schedule or a grant window judged by that clock would open doors it must not. The
floor is raised from the newest signed bundle, the last audit event and a saved file, so the door
decides with the floor until the wall clock catches up, and says so.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import structlog

from verifier.timeutil import from_ms, iso, to_ms
from verifier.trusted_time import TimeReading, TrustedTime

log = structlog.get_logger()

Clock = Callable[[], datetime]

TIME_FLOOR_FILE = "time-floor.json"
# How often the trusted instant is saved as the floor for the next start (an SD card write a minute).
TIME_FLOOR_SAVE_S = 60.0


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ClockWatch:
    """The trusted clock (`now`, `is_trusted`) and its periodic watch (`watch`)."""

    def __init__(self, wall_clock: Clock, state_dir: Path) -> None:
        self.wall_clock = wall_clock
        self.state_dir = state_dir
        self.trusted_time = TrustedTime()
        self.reading = TimeReading(0, True, 0, 0)
        self._was_trusted = True
        self._floor_saved_mono = 0.0

    def now(self) -> datetime:
        wall = self.wall_clock()
        reading = self.trusted_time.read(to_ms(wall), time.monotonic())
        self.reading = reading
        return wall if reading.trusted else from_ms(reading.instant_ms) or wall

    def is_trusted(self) -> bool:
        """Whether the clock may be believed (a schedule unlocks a door only while it is)."""
        self.now()
        return self.reading.trusted

    def load_floor(self, issued_at_ms: int, last_event_at: str | None) -> None:
        """The floor at start: the newest signed issue time, the last audit event, the saved floor."""
        from bridge.state.json_file import read_json

        candidates = [issued_at_ms]
        if last_event_at is not None:
            candidates.append(to_ms(datetime.fromisoformat(last_event_at.replace("Z", "+00:00"))))
        with contextlib.suppress(OSError, ValueError, TypeError):
            saved = read_json(self.state_dir / TIME_FLOOR_FILE)
            if saved is not None:
                candidates.append(int(saved["at_ms"]))
        self.trusted_time.raise_floor(max(candidates), time.monotonic())

    def watch(self, issued_at_ms: int, bridge_id: str, record: Callable[[str, dict[str, object]], object]) -> None:
        """Periodic (storage refresher): raise the floor from the cache, save it, and tell every
        change of trust and every jump of the wall clock to the journal and (through `record`,
        onto the decision worker) the audit log."""
        from bridge.state.json_file import write_json

        mono = time.monotonic()
        self.trusted_time.raise_floor(issued_at_ms, mono)
        now = self.now()
        r = self.reading
        if r.jump_ms:
            log.warning("clock_jumped", by_s=round(r.jump_ms / 1000), now=now.isoformat(timespec="seconds"),
                        check="NTP stepping the clock after boot is normal; a jump nobody made is not (timedatectl)")
        if r.trusted != self._was_trusted:
            self._was_trusted = r.trusted
            body: dict[str, object] = {"bridgeId": bridge_id, "wall": self.wall_clock().isoformat(timespec="seconds"),
                                       "floor": iso(from_ms(self.trusted_time.floor_now(mono))),
                                       "behindS": round(r.behind_ms / 1000)}
            if r.trusted:
                log.info("clock_trusted", **body)
            else:
                log.warning("clock_untrusted", **body, check="the Pi has no RTC: is NTP reachable (timedatectl)? "
                            "Decisions use the floor (newest signed bundle, last audit event) until the clock catches up")
            record("CLOCK_TRUSTED" if r.trusted else "CLOCK_UNTRUSTED", body)
        if r.trusted and mono - self._floor_saved_mono >= TIME_FLOOR_SAVE_S:
            self._floor_saved_mono = mono
            with contextlib.suppress(OSError):
                write_json(self.state_dir / TIME_FLOOR_FILE, {"at_ms": to_ms(now)})
