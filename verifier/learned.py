"""The rules of the learned offline cache, as pure functions: what a remembered GRANT is worth now.

When a central that ships no signed bundles (Frontelio, SNA) answers GRANT online, the daemon
remembers the answer (bridge/state/learned.py stores it). Offline, that memory may answer again — but
only until the earliest of three limits, each with its own reason so the journal says which one
closed the door:

- the credential's own expiry (a Frontelio credential JWT's `exp`, a visitor credential's
  `validUntil`) → CREDENTIAL_EXPIRED;
- the window the central gave (SNA `card.start_at`/`end_at`) → OUT_OF_DATE_WINDOW;
- the site's tolerance for acting on an old answer (`offline.max_age_s`, and for a credential with
  no expiry of its own, a card, `card_ttl_s`) → CACHE_STALE: the answer is too old to trust,
  which is exactly the trade-off the site chose (a grant revoked centrally during the outage
  still opens until then).

And it answers only for what the signed grant cache does not know (`signed_cache_silent`): a
bundle, where there is one, stays the authority for every credential it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from verifier.types import AccessDecision, CredentialJwt, Credential, Reason

# Why an entry stops answering GRANT, in the order `expiry` prefers them when two limits meet.
EXPIRED_CREDENTIAL = Reason.CREDENTIAL_EXPIRED
OUTSIDE_WINDOW = Reason.OUT_OF_DATE_WINDOW
TOO_OLD = Reason.CACHE_STALE


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Everything that limits one learned GRANT, in epoch milliseconds (None: no such limit)."""

    learned_ms: int
    max_age_ms: int
    credential_expires_ms: int | None = None
    window_starts_ms: int | None = None
    window_ends_ms: int | None = None
    ttl_ms: int | None = None  # a cap for credentials with no expiry of their own (cards)


@dataclass(frozen=True, slots=True)
class Expiry:
    at_ms: int
    reason: Reason


def expiry(life: Lifetime) -> Expiry:
    """The earliest limit, and the reason it stands for."""
    candidates = [Expiry(life.learned_ms + life.max_age_ms, TOO_OLD)]
    if life.ttl_ms is not None:
        candidates.append(Expiry(life.learned_ms + life.ttl_ms, TOO_OLD))
    if life.window_ends_ms is not None:
        candidates.append(Expiry(life.window_ends_ms, OUTSIDE_WINDOW))
    if life.credential_expires_ms is not None:
        candidates.append(Expiry(life.credential_expires_ms, EXPIRED_CREDENTIAL))
    return min(candidates, key=lambda e: (e.at_ms, _PREFERENCE[e.reason]))


# Two limits at the same instant: name the one the person can do something about.
_PREFERENCE = {EXPIRED_CREDENTIAL: 0, OUTSIDE_WINDOW: 1, TOO_OLD: 2}


@dataclass(frozen=True, slots=True)
class LearnedEntry:
    """One remembered GRANT, as read back (and integrity-checked) from storage."""

    upstream: str
    reader_id: str
    credential_kind: str
    user_id: str | None
    user_name: str | None
    zone_name: str | None
    learned_ms: int
    expires_ms: int
    expires_reason: Reason
    starts_ms: int | None
    devices: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Recalled:
    """The learned cache's answer: reason None is a GRANT."""

    reason: Reason | None
    user_id: str | None
    user_name: str | None
    zone_name: str | None


def recall(entry: LearnedEntry, now_ms: int, identity: frozenset[str], max_age_ms: int) -> Recalled:
    """What a learned entry says now. `identity` is how this terminal is known to the upstream
    (SNA device SN/ID/MAC), checked against the card's `devices` exactly as SNA does online;
    `max_age_ms` is the CURRENT setting, so lowering it on reload applies to entries at once."""

    def answer(reason: Reason | None) -> Recalled:
        return Recalled(reason, entry.user_id, entry.user_name, entry.zone_name)

    if entry.devices is not None and not identity & set(entry.devices):
        return answer(Reason.NO_GRANT)
    if entry.starts_ms is not None and now_ms < entry.starts_ms:
        return answer(Reason.OUT_OF_DATE_WINDOW)
    limit = min(Expiry(entry.expires_ms, entry.expires_reason), Expiry(entry.learned_ms + max_age_ms, TOO_OLD),
                key=lambda e: (e.at_ms, _PREFERENCE[e.reason]))
    if now_ms >= limit.at_ms or now_ms < entry.learned_ms - _CLOCK_SLACK_MS:
        return answer(limit.reason if now_ms >= limit.at_ms else TOO_OLD)
    return answer(None)


# A clock that reads earlier than the moment an answer was learned (RTC-less Pi after a reboot,
# a bad NTP step) cannot tell how old the answer is: treat it as too old rather than forever young.
_CLOCK_SLACK_MS = 5 * 60 * 1000


def jwt_expiry_ms(claims: dict[str, object]) -> int | None:
    """The earliest of a credential JWT's `exp` and a visitor credential's `validUntil`."""
    limits: list[int] = []
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and math.isfinite(exp):
        limits.append(int(exp * 1000))
    valid_until = claims.get("validUntil")
    if isinstance(valid_until, str):
        from verifier.timeutil import TimeFormatError, parse_instant, to_ms

        try:
            limits.append(to_ms(parse_instant(valid_until, "validUntil")))
        except TimeFormatError:
            limits.append(0)  # an unreadable limit is no licence: expired
    return min(limits) if limits else None


# Reasons with which the signed cache says "I do not know this credential here", as opposed to a
# verdict of its own (GRANT, GRANT_REVOKED, OUT_OF_DATE_WINDOW, HOLDER_INACTIVE, ...).
_SILENT = frozenset({Reason.CACHE_STALE, Reason.UNKNOWN_READER})


def signed_cache_silent(credential: Credential, decision: AccessDecision, jwt_has_key: Callable[[str], bool]) -> bool:
    """True when the signed cache has no verdict of its own on this credential at this reader.

    NO_GRANT counts as silence only when the cache knows no holder (`user_id` None): a known
    holder without a grant here is a verdict. A credential JWT the cache holds no key for gets
    SIGNATURE_INVALID from the cache, which means "cannot check" (Frontelio signs its own);
    with a key, SIGNATURE_INVALID is a verdict.
    """
    if decision.granted or decision.replay:
        return False
    reason = decision.reason
    if reason in _SILENT:
        return True
    if reason is Reason.NO_GRANT and decision.user_id is None:
        return True
    if reason is Reason.SIGNATURE_INVALID and isinstance(credential, CredentialJwt):
        return not jwt_has_key(credential.token)
    return False


LearnedLookup = Callable[[Credential, str, datetime], "Recalled | None"]
