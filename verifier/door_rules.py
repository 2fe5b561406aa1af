"""The door rules a GRANT must still pass: interlock, two-person rule, anti-passback.

Applied by `Verifier.decide` after the door mode (and with it the emergency precedence), to
GRANTs only, in this order: interlock (the other door of the mantrap is open: `INTERLOCK`),
two-person (the first holder: `TWO_PERSON_PENDING`), anti-passback (`ANTIPASSBACK`, or a soft
violation event). A DENY any rule adds is not a guess: the credential is fine. Only a GRANT that
survives every rule moves the presence of anti-passback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from verifier.antipassback import AntiPassback
from verifier.emergency import EmergencyEvent
from verifier.interlock import DoorState, Interlock
from verifier.two_person import TwoPerson
from verifier.types import AccessDecision, Decision, Reason


class DoorRules:
    def __init__(self, reader_door: dict[str, str], *, antipassback: AntiPassback | None = None,
                 two_person: TwoPerson | None = None, interlock: Interlock | None = None) -> None:
        self.reader_door = reader_door
        self.antipassback = antipassback
        self.two_person = two_person
        self.interlock = interlock
        self._events: list[EmergencyEvent] = []

    def gate(self, d: AccessDecision, now_ms: int, doors: Mapping[str, DoorState]) -> AccessDecision:
        if not d.granted or d.replay:
            return d
        door = self.reader_door.get(d.reader_id, "")
        holder = d.user_id or d.fingerprint
        if self.interlock is not None and self.interlock.blocking(door, doors) is not None:
            return _deny(d, Reason.INTERLOCK)
        if self.two_person is not None and self.two_person.applies(door):
            if d.user_id is None or not self.two_person.present(door, d.user_id, now_ms).opens:
                return _deny(d, Reason.TWO_PERSON_PENDING)
        if self.antipassback is not None:
            verdict = self.antipassback.check(holder, d.reader_id, now_ms)
            if not verdict.allow:
                return _deny(d, Reason.ANTIPASSBACK)
            self.antipassback.passed(holder, d.reader_id, now_ms)
        return d

    def take_events(self) -> list[EmergencyEvent]:
        return self.antipassback.take_events() if self.antipassback is not None else []


def _deny(d: AccessDecision, reason: Reason) -> AccessDecision:
    return replace(d, decision=Decision.DENY, reason=reason)
