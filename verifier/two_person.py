"""Two-person rule: a door opens only when two distinct authorised holders present within a window.

Pure, clock injected. The first holder's GRANT becomes a `TWO_PERSON_PENDING` decision (DENY:
the door does not open) and opens a window at that door; a GRANT for a *different* holder inside
the window opens the door for both and closes the window. The same holder twice only restarts the
window (one person with two cards is still one person — cards are judged by holder, and a card
with no holder cannot be the second person of a pair it started). After the window the next
holder starts a new pair.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Pending:
    holder: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class Pairing:
    opens: bool
    first: str | None = None  # the first holder of the pair (when `opens`)


class TwoPerson:
    def __init__(self, windows_s: dict[str, float]) -> None:
        self.windows_s = windows_s  # door → window
        self._pending: dict[str, _Pending] = {}

    def applies(self, door: str) -> bool:
        return door in self.windows_s

    def present(self, door: str, holder: str, now_ms: int) -> Pairing:
        pending = self._pending.get(door)
        if pending is not None and now_ms < pending.until_ms and pending.holder != holder:
            del self._pending[door]
            return Pairing(True, pending.holder)
        self._pending[door] = _Pending(holder, now_ms + int(self.windows_s[door] * 1000))
        return Pairing(False)

    def status(self, now_ms: int) -> dict[str, object]:
        return {door: {"window_s": w, "waiting": (p := self._pending.get(door)) is not None and now_ms < p.until_ms}
                for door, w in sorted(self.windows_s.items())}
