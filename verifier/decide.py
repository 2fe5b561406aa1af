"""`Verifier.decide`: a credential, a reader and an instant in; a decision out.

No clock reads, no network, no hardware: `now` is a parameter and the only I/O is SQLite point
look-ups on the grant cache. The replay memory and rate limiter are explicit state owned by the
Verifier (one per daemon), advanced only by `decide` with the instant it was given.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Mapping

from verifier import jwtcheck
from verifier.cache import GrantCache, UserRow, Window, Zone
from verifier.door_mode import DoorModes, ModeSettings, Verdict
from verifier.door_rules import DoorRules
from verifier.duress import DuressRule
from verifier.emergency import Emergency
from verifier.interlock import DoorState
from verifier.schedule import Calendar
from verifier.guard import RateLimiter, ReplayMemory
from verifier.hashing import hash_invite, hash_pin
from verifier.learned import LearnedLookup, Recalled, signed_cache_silent
from verifier.timeutil import to_ms, within
from verifier.types import (
    AccessDecision,
    CardNumber,
    Credential,
    CredentialJwt,
    Decision,
    DigitalIdToken,
    InviteCode,
    Malformed,
    Pin,
    Reason,
    Source,
    fingerprint,
)

# Reasons that describe the system, not the person at the door. A card, token or invite code
# cannot open a door whose cache is stale or does not list the reader, so those DENYs are not
# guesses. A typed code can (an offline passcode needs no cache at all): for the keypad bucket
# every DENY but RATE_LIMITED is a guess, whatever the state of the cache.
_SYSTEM_REASONS = frozenset({Reason.RATE_LIMITED, Reason.CACHE_STALE, Reason.UNKNOWN_READER, Reason.UPSTREAM_UNAVAILABLE})


def counts_as_guess(reason: Reason | None, keypad: bool) -> bool:
    """One rule for what the rate limiter counts: every wrong secret that might have been right."""
    if reason is None or reason is Reason.RATE_LIMITED:
        return False
    return keypad or reason not in _SYSTEM_REASONS


@dataclass(frozen=True, slots=True)
class Policy:
    staleness: str = "deny"  # "deny" → CACHE_STALE after not_after; "warn" → keep deciding
    jwt_algorithms: frozenset[str] = frozenset({"EdDSA", "ES256"})
    jwt_leeway_s: float = 30.0
    replay_window_s: float = 2.0
    rate_limit_denies: int = 5
    rate_limit_window_s: float = 60.0
    rate_limit_cooldown_s: float = 30.0


# A hook for codes the cache does not list (offline passcodes): (digits, reader_id, now) →
# (reason or None for GRANT, label) or None when the code is not of that scheme.
OfflineCodeCheck = Callable[[str, str, datetime], "tuple[Reason | None, str] | None"]


@dataclass(frozen=True, slots=True)
class Lockout:
    """A reader's bucket just locked: an alert of its own (READER_RATE_LIMITED in the audit log)."""

    reader_id: str
    keypad: bool
    denies: int
    window_s: float
    cooldown_s: float
    until_ms: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    reason: Reason | None
    user_id: str | None = None
    user_name: str | None = None
    zone: Zone | None = None
    duress: bool = False


class Verifier:
    """`fingerprint_key` is the bridge's secret for `fingerprint` (the daemon passes the one in
    its state directory). Without one, a random key for this Verifier alone: fingerprints then
    link repeats within this object's life only (tests and benches)."""

    def __init__(self, cache: GrantCache, policy: Policy = Policy(), offline_codes: OfflineCodeCheck | None = None,
                 learned: LearnedLookup | None = None, modes: ModeSettings | None = None, *,
                 fingerprint_key: bytes | None = None) -> None:
        self.cache = cache
        # Answers from the central remembered by the daemon (bridge/state/learned.py), asked only when
        # the signed cache has no verdict of its own: a bundle stays the authority it is.
        self.learned = learned
        self.policy = policy
        self.fingerprint_key = fingerprint_key if fingerprint_key is not None else secrets.token_bytes(32)
        self.lockouts: list[Lockout] = []
        self.replays = ReplayMemory(int(policy.replay_window_s * 1000))
        self.limiter = RateLimiter(policy.rate_limit_denies, int(policy.rate_limit_window_s * 1000),
                                   int(policy.rate_limit_cooldown_s * 1000))
        self.offline_codes = offline_codes
        # Door modes gate decisions only when the site configures them (the daemon always does).
        self.mode_settings = modes
        self._door_modes: DoorModes | None = None
        self._modes_generation = -1
        # Emergency precedence and door rules (verifier/emergency.py, door_rules.py): set by the daemon.
        self.emergency: Emergency | None = None
        self.rules: DoorRules | None = None
        self.duress: DuressRule | None = None

    def is_stale(self, now: datetime) -> bool:
        self.cache.refresh()
        return self.cache.meta.version == 0 or to_ms(now) >= self.cache.meta.not_after_ms

    def door_modes(self) -> DoorModes:
        """The door-mode state machine of the current cache version (rebuilt when it changes;
        pairings and first-person-in state carry over)."""
        if self._door_modes is None or self._modes_generation != self.cache.generation:
            settings = self.mode_settings or ModeSettings()
            records = self.cache.door_records()
            fresh = DoorModes(list(records.policies), records.schedules, settings.tz, Calendar.of(list(records.holidays)),
                              settings.default_mode, settings.pin_timeout_s, settings.reader_door,
                              records.override_roles, self.cache.roles_of,
                              self.emergency.apply if self.emergency is not None else None)
            if self._door_modes is not None:
                fresh.carry_state(self._door_modes)
            self._door_modes, self._modes_generation = fresh, self.cache.generation
        return self._door_modes

    def gate(self, credential: Credential, decision: AccessDecision, now: datetime, clock_trusted: bool = True) -> Verdict:
        """The door mode's decision from the grants' decision (also for online answers)."""
        number = credential.number if isinstance(credential, CardNumber) else None
        return self.door_modes().gate(decision, credential.kind, number, to_ms(now), clock_trusted)

    def decide(self, credential: Credential, reader_id: str, source: Source, now: datetime,
               verdict: AccessDecision | None = None, clock_trusted: bool = True,
               doors: Mapping[str, DoorState] | None = None) -> AccessDecision:
        """`verdict`: a decision made elsewhere (the central's answer, a late denial) that takes
        the cache's place. The door's own replay window and rate limiter apply to it all the same.
        `doors`: the position and relay of each door now (for the interlock)."""
        now_ms = to_ms(now)
        fp = fingerprint(credential, self.fingerprint_key)
        previous = self.replays.recall(reader_id, fp, now_ms)
        if previous is not None:
            return replace(previous, replay=True)
        keypad = isinstance(credential, Pin)
        self.cache.refresh()
        limited = self.limiter.limited(reader_id, keypad, now_ms)
        if verdict is not None and not limited:
            decision = replace(verdict, reader_id=reader_id, source=source, cache_version=self.cache.meta.version,
                               credential_kind=credential.kind, fingerprint=fp)
        else:
            outcome = _Outcome(Reason.RATE_LIMITED) if limited else self._evaluate(credential, reader_id, now, now_ms)
            decision = AccessDecision(
                decision=Decision.GRANT if outcome.reason is None else Decision.DENY,
                reason=outcome.reason,
                reader_id=reader_id,
                source=source,
                user_id=outcome.user_id,
                user_name=outcome.user_name,
                zone_id=outcome.zone.id if outcome.zone else None,
                zone_name=outcome.zone.name if outcome.zone else None,
                cache_version=self.cache.meta.version,
                credential_kind=credential.kind,
                fingerprint=fp,
                duress=outcome.duress,
            )
            if (self.learned is not None and outcome.reason is not Reason.RATE_LIMITED
                    and signed_cache_silent(credential, decision, self._jwt_has_key)):
                recalled = self.learned(credential, reader_id, now)
                if recalled is not None:
                    decision = _from_recalled(decision, recalled)
        gated, mode_guess = decision, False
        if self.emergency is not None and decision.granted:
            # The designated admin credential toggles the site lockdown before its own decision
            # is gated: turning lockdown on does not also open the door.
            self.emergency.admin_presented(reader_id, decision.user_id,
                                           self.cache.roles_of(decision.user_id) if decision.user_id else frozenset(), now_ms)
        if self.mode_settings is not None:
            # A DENY the door mode adds (PIN_REQUIRED, DOOR_LOCKED, …) is not a guess; a PIN that
            # is not the card holder's is (verdict.guess). Online answers are gated the same way.
            verdict_of_mode = self.gate(credential, decision, now, clock_trusted)
            gated, mode_guess = verdict_of_mode.decision, verdict_of_mode.guess
        if self.rules is not None:
            gated = self.rules.gate(gated, now_ms, doors or {})
        if ((counts_as_guess(decision.reason, keypad) and not gated.granted) or mode_guess) \
                and self.limiter.record_deny(reader_id, keypad, now_ms):
            p = self.policy
            self.lockouts.append(Lockout(reader_id, keypad, p.rate_limit_denies, p.rate_limit_window_s,
                                         p.rate_limit_cooldown_s, now_ms + self.limiter.cooldown_ms))
        decision = gated
        if decision.reason is not Reason.RATE_LIMITED:
            self.replays.remember(reader_id, fp, now_ms, replace(decision, replay=False) if decision.replay else decision)
        return decision

    def _jwt_has_key(self, token: str) -> bool:
        return jwtcheck.has_key(token, self.cache.jwks(), self.policy.jwt_algorithms)

    def take_lockouts(self) -> list[Lockout]:
        """The buckets locked since the last call (the daemon records each as an audit event)."""
        taken, self.lockouts = self.lockouts, []
        return taken

    # --- evaluation ---------------------------------------------------------------------------

    def _evaluate(self, credential: Credential, reader_id: str, now: datetime, now_ms: int) -> _Outcome:
        if isinstance(credential, Malformed):
            return _Outcome(Reason.MALFORMED_CREDENTIAL)
        if isinstance(credential, DigitalIdToken):
            # Digital ID tokens live 5 minutes and are only known to Digital ID: no offline answer.
            return _Outcome(Reason.UPSTREAM_UNAVAILABLE)
        zones = self.cache.zones_for_reader(reader_id)
        if isinstance(credential, Pin):
            # Offline passcodes need no sync at all: checked before staleness and before the
            # (slow, scrypt) stored-PIN look-up. The hook answers None for codes not its own.
            offline = self._offline_code(credential, reader_id, now)
            if offline is not None:
                return _Outcome(offline[0], None, offline[1], zones[0] if zones else None)
        meta = self.cache.meta
        if meta.version == 0 or (now_ms >= meta.not_after_ms and self.policy.staleness == "deny"):
            return _Outcome(Reason.CACHE_STALE)
        if not zones and not self.cache.reader_known(reader_id):
            return _Outcome(Reason.UNKNOWN_READER)
        match credential:
            case CardNumber(number=number):
                return self._card(number, reader_id, zones, now_ms)
            case Pin(digits=digits):
                return self._pin(digits, reader_id, zones, now_ms)
            case InviteCode(code=code):
                return self._visitor(code, zones, now_ms)
            case CredentialJwt(token=token, header=header):
                return self._jwt(token, header, zones, now_ms)
        return _Outcome(Reason.MALFORMED_CREDENTIAL)

    def _card(self, number: str, reader_id: str, zones: tuple[Zone, ...], now_ms: int) -> _Outcome:
        held = self.cache.held_card(number)
        if held is None:
            return _Outcome(Reason.NO_GRANT)
        card, user = held.card, held.holder
        name = user.name if user else card.name
        if (why := _window_reason(card.window, now_ms)) is not None:
            return _Outcome(why, card.user_id, name)
        if user is not None and not user.active:
            return _Outcome(Reason.HOLDER_INACTIVE, card.user_id, name)
        if card.devices is not None and reader_id in card.devices:
            return _Outcome(None, card.user_id, name, zones[0] if zones else None)
        if card.user_id is not None:
            return self._grants_of(card.user_id, user, name, zones, now_ms)
        return _Outcome(Reason.NO_GRANT, None, name)

    def _pin(self, digits: str, reader_id: str, zones: tuple[Zone, ...], now_ms: int) -> _Outcome:
        params = self.cache.meta.pin_hashing
        rows = [r for r in self.cache.passcodes(hash_pin(digits, params)) if reader_id in r.devices] if params else []
        duress = False
        if not rows and params and self.duress is not None and (normal := self.duress.normal_of(digits)) is not None:
            rows = [r for r in self.cache.passcodes(hash_pin(normal, params)) if reader_id in r.devices]
            duress = bool(rows)
        if rows:
            best = min(rows, key=lambda r: _rank(_window_reason(r.window, now_ms)))
            why = _window_reason(best.window, now_ms)
            user = self.cache.user(best.user_id) if best.user_id else None
            name = user.name if user else best.name
            if why is None and user is not None and not user.active:
                why = Reason.HOLDER_INACTIVE
            return _Outcome(why, best.user_id, name, zones[0] if zones else None, duress and why is None)
        return _Outcome(Reason.NO_GRANT)

    def _offline_code(self, pin: Pin, reader_id: str, now: datetime) -> tuple[Reason | None, str] | None:
        return self.offline_codes(pin.digits, reader_id, now) if self.offline_codes else None

    def _visitor(self, code: str, zones: tuple[Zone, ...], now_ms: int) -> _Outcome:
        visitor = self.cache.visitor(hash_invite(code))
        if visitor is None:
            return _Outcome(Reason.NO_GRANT)
        if (why := _window_reason(visitor.window, now_ms)) is not None:
            return _Outcome(why, None, visitor.name)
        zone = next((z for z in zones if z.id in visitor.zone_ids), None)
        return _Outcome(None if zone else Reason.NO_GRANT, None, visitor.name, zone)

    def _jwt(self, token: str, header: dict[str, Any] | None, zones: tuple[Zone, ...], now_ms: int) -> _Outcome:
        p = self.policy
        result = jwtcheck.verify(token, self.cache.jwks(), p.jwt_algorithms, now_ms / 1000, p.jwt_leeway_s, header)
        claims = result.claims or {}
        user_id = claims.get("sub") or claims.get("userId")
        user_id = user_id if isinstance(user_id, str) else None
        name = claims.get("name") if isinstance(claims.get("name"), str) else None
        if result.reason is not None:
            return _Outcome(result.reason, user_id, name)
        zone_ids = claims.get("zoneIds")
        if zone_ids is not None:
            # A visitor credential (minted by Frontelio's redeem endpoint): its zones are in the
            # signed token; exp/nbf carry validUntil/validFrom.
            if not isinstance(zone_ids, list):
                return _Outcome(Reason.MALFORMED_CREDENTIAL)
            zone = next((z for z in zones if z.id in zone_ids), None)
            return _Outcome(None if zone else Reason.NO_GRANT, user_id, name, zone)
        if user_id is None:
            return _Outcome(Reason.MALFORMED_CREDENTIAL)
        return self._user_grants(user_id, name, zones, now_ms)

    def _user_grants(self, user_id: str, name: str | None, zones: tuple[Zone, ...], now_ms: int) -> _Outcome:
        user = self.cache.user(user_id)
        if user is not None:
            name = user.name or name
            if not user.active:
                return _Outcome(Reason.HOLDER_INACTIVE, user_id, name)
        return self._grants_of(user_id, user, name, zones, now_ms)

    def _grants_of(self, user_id: str, user: UserRow | None, name: str | None, zones: tuple[Zone, ...],
                   now_ms: int) -> _Outcome:
        """The holder's grants (their own, then their roles') in the reader's zones; `user` is the
        holder's row, already read (and checked active) by the caller."""
        best: tuple[int, Reason | None, Zone | None] = (_rank(Reason.NO_GRANT), Reason.NO_GRANT, None)
        for zone in zones:
            for grant in self.cache.zone_grants(user_id, zone.id):
                why = _window_reason(grant.window, now_ms)
                if why is None and grant.schedule_id is not None and not self.door_modes().schedule_open(grant.schedule_id, now_ms):
                    why = Reason.OUT_OF_SCHEDULE
                if why is None and zone.schedule_aware and not self.cache.on_shift(user_id, zone.id, now_ms):
                    why = Reason.OUT_OF_SHIFT_WINDOW
                if why is None:
                    return _Outcome(None, user_id, name, zone)
                if _rank(why) < best[0]:
                    best = (_rank(why), why, zone)
        return _Outcome(best[1], user_id, name, best[2])



def _from_recalled(decision: AccessDecision, recalled: Recalled) -> AccessDecision:
    return replace(decision, decision=Decision.GRANT if recalled.reason is None else Decision.DENY,
                   reason=recalled.reason, user_id=recalled.user_id, user_name=recalled.user_name,
                   zone_id=None, zone_name=recalled.zone_name, learned=True)



def _window_reason(w: Window, now_ms: int) -> Reason | None:
    if w.revoked:
        return Reason.GRANT_REVOKED
    if not within(w.starts_ms, w.ends_ms, now_ms):
        return Reason.OUT_OF_DATE_WINDOW
    return None


# When several grants all deny, report the most specific: a grant that exists and is only
# outside its shift says more to the technician than a revoked one.
_RANKS = {None: 0, Reason.OUT_OF_SCHEDULE: 1, Reason.OUT_OF_SHIFT_WINDOW: 1, Reason.OUT_OF_DATE_WINDOW: 2, Reason.GRANT_REVOKED: 3,
          Reason.HOLDER_INACTIVE: 4, Reason.NO_GRANT: 5}


def _rank(reason: Reason | None) -> int:
    return _RANKS.get(reason, 9)
