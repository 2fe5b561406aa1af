"""Duress PIN: the holder's own PIN with its last digit raised by a configured offset.

A holder forced to open a door types the duress PIN instead of the normal one (PIN 4711, offset
1 → 4712; a last digit 9 wraps to 0). The door grants exactly as it would for the normal PIN —
same decision, same relay, same LED and beep, same journal decision line — and the daemon raises
a `DURESS` alarm event that replicates ahead of the backlog (bridge/state/outbox.py).

Rules, so the duress PIN never changes who gets in:
- the normal PIN is looked up first: a code that is some holder's real PIN is that PIN, never
  anyone's duress PIN (an offset that makes one holder's duress PIN another's real PIN is a
  site's choice to avoid; it then only means that other holder);
- only stored PINs (bundle `passcode` records) have a duress form; offline passcodes do not (their
  digits are a MAC: changing one digit makes a wrong code, and it is refused as one);
- each wrong PIN now costs a second hash look-up (the duress form), and a guesser has two codes
  per holder to find instead of one — the usual price of duress codes at any panel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DuressRule:
    offset: int  # 1..9, added to the last digit modulo 10

    def normal_of(self, digits: str) -> str | None:
        """The normal PIN a duress PIN stands for (None: not a PIN of digits)."""
        if not digits or not digits.isdigit():
            return None
        return digits[:-1] + str((int(digits[-1]) - self.offset) % 10)

    def duress_of(self, digits: str) -> str:
        return digits[:-1] + str((int(digits[-1]) + self.offset) % 10)
