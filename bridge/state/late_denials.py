"""A short-lived negative cache for DENYs the central sent after the verify budget.

On the scan path the central gets `verify_budget_s`; after that the cache decides and the request
keeps running in the background for up to `upstream.http.late_answer_s`. If the central's answer
then turns out to be a DENY for a lasting reason (a revoked grant, an unknown or expired
credential) the cache may already have granted: the door cannot take that back, but it can make
the next presentation of the same credential respect the central's word. Entries last
`LATE_DENY_TTL_S`, long enough for the next sync to carry the change into the cache, short
enough that a grant restored at the central is not refused for long. An online answer for the
credential replaces its entry (the central has spoken again).

Pure state, clock-injected (milliseconds), bounded; keyed by a full SHA-256 of the credential so
no secret is held and no two credentials share an entry.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace

from verifier.types import AccessDecision, Credential, Reason, secret_of

# Ten minutes: several bundle-sync intervals (60 s default), so the cache has caught up by the
# time the entry lapses; short enough that a grant restored by an administrator works again soon.
LATE_DENY_TTL_S = 600.0
# Bounded like the replay memory: far more distinct late denials than a door sees in ten minutes.
MAX_ENTRIES = 10_000

# Reasons that still hold at the next presentation. Window and shift reasons may stop holding
# within the TTL (a shift starts); system reasons (rate limit, unknown reader) are about the
# reader, not the credential.
LASTING_REASONS = frozenset({
    Reason.GRANT_REVOKED, Reason.NO_GRANT, Reason.CREDENTIAL_EXPIRED, Reason.SIGNATURE_INVALID,
    Reason.HOLDER_INACTIVE, Reason.MALFORMED_CREDENTIAL,
})


def credential_key(credential: Credential) -> str:
    return hashlib.sha256(f"{credential.kind}:{secret_of(credential)}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    decision: AccessDecision
    until_ms: int


class LateDenials:
    def __init__(self, ttl_s: float = LATE_DENY_TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_ms = int(ttl_s * 1000)
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def note(self, key: str, denial: AccessDecision, now_ms: int) -> int | None:
        """Remember a late DENY; the instant (ms) it lapses, or None if its reason does not last."""
        if denial.granted or denial.reason not in LASTING_REASONS:
            return None
        until = now_ms + self.ttl_ms
        self._entries.pop(key, None)
        self._entries[key] = _Entry(denial, until)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return until

    def verdict(self, key: str, now_ms: int) -> AccessDecision | None:
        """The DENY that takes the cache's place for this credential, if one is in force."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now_ms >= entry.until_ms:
            del self._entries[key]
            return None
        d = entry.decision
        raw = d.upstream_reason or (d.reason.value if d.reason else None)
        return replace(d, online=False, replay=False, upstream_reason=f"late:{raw}")

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
