"""The one interface the daemon calls, whichever upstream is behind it."""

from __future__ import annotations

from typing import Protocol

from verifier.types import AccessDecision, Credential, Decision, OnlineTerms, Reason, Source, fingerprint


class UpstreamAdapter(Protocol):
    """Raises only `bridge.upstream.errors.UpstreamError` subclasses (and CancelledError)."""

    name: str

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
) -> AccessDecision:
    """An upstream's verdict in our own type: the credential only as kind and fingerprint."""
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
        credential_kind=credential.kind,
        fingerprint=fingerprint(credential),
        terms=terms,
    )
