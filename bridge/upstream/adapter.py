"""The one interface the daemon calls, whichever upstream is behind it."""

from __future__ import annotations

import re
from typing import Protocol

from verifier.types import AccessDecision, Credential, Decision, OnlineTerms, Reason, Source


class UpstreamAdapter(Protocol):
    """Raises only `bridge.upstream.errors.UpstreamError` subclasses (and CancelledError)."""

    name: str
    # True where the seed says the upstream alone decides (SNA: "the terminal does not perform any
    # local verification"): asked for every credential it accepts, whatever `bridge.mode`.
    decides_alone: bool
    # False where the seed documents no heartbeat: a no-op beat is no proof the upstream is there.
    has_heartbeat: bool

    def accepts(self, credential: Credential, source: Source) -> bool:
        """True if this upstream can judge this credential from this source."""
        ...

    async def verify(self, credential: Credential, reader_id: str, source: Source) -> AccessDecision:
        """One attempt within `verify_budget_s`; an `AccessDecision(online=True)`."""
        ...

    async def heartbeat(self, reader_id: str) -> None:
        """Tell the upstream this reader is alive (a no-op where the seed has no heartbeat)."""
        ...

    async def aclose(self) -> None: ...


# The Frontelio document's eight DENY reasons: a central saying one of these is taken at its word.
DOCUMENTED_DENY_REASONS = frozenset({
    Reason.NO_GRANT, Reason.GRANT_REVOKED, Reason.OUT_OF_SHIFT_WINDOW, Reason.OUT_OF_DATE_WINDOW,
    Reason.CREDENTIAL_EXPIRED, Reason.SIGNATURE_INVALID, Reason.UNKNOWN_READER, Reason.RATE_LIMITED,
})
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def central_deny_reason(raw: str | None) -> tuple[Reason, str | None]:
    """A DENY from the central is a DENY whatever its reason word: a documented word is ours as
    it is; any other (`BANNED`, a new code, no reason at all) is NO_GRANT, and the raw word is
    returned for the audit record (None when nothing was lost). Only a transport failure or a
    malformed answer makes the door fall back to its cache — never a word it does not know."""
    if raw is not None and raw in Reason.__members__ and Reason(raw) in DOCUMENTED_DENY_REASONS:
        return Reason(raw), None
    return Reason.NO_GRANT, safe_word(raw)


def safe_word(raw: str | None) -> str:
    """The central's word as it may go into an audit row: a short code, or a placeholder."""
    if raw is None:
        return "(none)"
    return raw if _SAFE_WORD.match(raw) else "(not a code word)"


def online_decision(
    credential: Credential,
    reader_id: str,
    source: Source,
    decision: Decision,
    reason: Reason | None,
    *,
    user_id: str | None = None,
    user_name: str | None = None,
    zone_name: str | None = None,
    replay: bool = False,
    terms: OnlineTerms | None = None,
    upstream_reason: str | None = None,
) -> AccessDecision:
    """An upstream's verdict in our own type: the credential only as its kind. The fingerprint is
    left empty: only the daemon holds the bridge's fingerprint key, and it fills it in."""
    return AccessDecision(
        decision=decision,
        reason=reason,
        reader_id=reader_id,
        source=source,
        user_id=user_id,
        user_name=user_name,
        zone_name=zone_name,
        replay=replay,
        online=True,
        upstream_reason=upstream_reason,
        credential_kind=credential.kind,
        terms=terms,
    )
