"""The instant decisions are taken at: the wall clock, but never earlier than what is known to have
happened already.

A Pi has no RTC. After a power cut without WAN it boots with the time of its last shutdown (fake-
hwclock) or 1970, and NTP is unauthenticated. Deciding with such a clock lets expired cards, expired
JWTs and last year's offline codes open the door. So the core keeps a *floor*: the newest signed
`issued_at` of a bundle, the time of the last audit event, and a floor persisted while running.
Within a small tolerance the wall clock is taken as it is; while it is further behind the floor, the instant is the floor plus the
monotonic time elapsed since it was set (monotonic time does not jump), and the clock is reported
untrusted. Pure: every reading (wall, monotonic) is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

# Clocks of two honest machines disagree by seconds; a central's `issued_at` a little ahead of the
# door's clock is skew, not an attack. Behind the floor by more than this, the clock is untrusted.
TOLERANCE_MS = 120_000
# A wall clock that moves this much more (or less) than monotonic time between two readings was
# set, by NTP after boot or by hand: worth a journal line either way.
JUMP_MS = 300_000


@dataclass(frozen=True, slots=True)
class TimeReading:
    instant_ms: int  # what decisions use
    trusted: bool
    behind_ms: int  # how far the wall clock is behind the floor (0 when it is not)
    jump_ms: int  # wall minus monotonic progress since the previous reading (0 when small)


class TrustedTime:
    def __init__(self, floor_ms: int = 0, mono_s: float = 0.0) -> None:
        self.floor_ms = floor_ms
        self._floor_mono_s = mono_s
        self._last: tuple[int, float] | None = None

    def raise_floor(self, at_ms: int, mono_s: float) -> None:
        """Something signed or recorded says `at_ms` has happened (never lowers the floor)."""
        if at_ms > self.floor_now(mono_s):
            self.floor_ms, self._floor_mono_s = at_ms, mono_s

    def floor_now(self, mono_s: float) -> int:
        return self.floor_ms + int((mono_s - self._floor_mono_s) * 1000)

    def read(self, wall_ms: int, mono_s: float) -> TimeReading:
        floor = self.floor_now(mono_s)
        jump = 0
        if self._last is not None:
            drift = (wall_ms - self._last[0]) - int((mono_s - self._last[1]) * 1000)
            jump = drift if abs(drift) >= JUMP_MS else 0
        self._last = (wall_ms, mono_s)
        behind = max(0, floor - wall_ms)
        trusted = behind <= TOLERANCE_MS
        return TimeReading(wall_ms if trusted else floor, trusted, behind, jump)
