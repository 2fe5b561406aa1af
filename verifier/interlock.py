"""Interlock (mantrap): of two doors on one bridge, one does not open while the other is open.

Pure: the door states are values the caller reads off the position switches and relays. "Open"
is the position switch reading open, or the relay energised (a pulse in progress: the other door
may be opening right now, before its switch moves) — so two GRANTs in the same instant cannot
open both doors. A door with no position switch counts by its relay alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DoorState:
    open: bool
    unlocked: bool


class Interlock:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.partners: dict[str, list[str]] = {}
        for a, b in pairs:
            self.partners.setdefault(a, []).append(b)
            self.partners.setdefault(b, []).append(a)

    def blocking(self, door: str, states: Mapping[str, DoorState]) -> str | None:
        """The partner door that keeps `door` shut now, or None."""
        for other in self.partners.get(door, ()):
            s = states.get(other)
            if s is not None and (s.open or s.unlocked):
                return other
        return None
