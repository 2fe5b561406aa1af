"""Asking the upstream about one scan, within its budget, and keeping the answers that come late.

The door must never wait on the network longer than `upstream.http.verify_budget_s`: past it the
cache decides. A request still running then is left to finish (up to the adapter's own bound):
a late GRANT changes nothing, a late DENY is recorded and held against the credential
(bridge/state/late_denials.py) so the next presentation is denied without asking again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from bridge.config import Config
from bridge.service.health import Health, check_for
from bridge.state.late_denials import LateDenials, credential_key
from verifier.timeutil import from_ms, iso, to_ms
from verifier.types import AccessDecision, Credential, DigitalIdToken, InviteCode, Source

if TYPE_CHECKING:
    from bridge.service.audit_events import Submit
    from bridge.service.clock_watch import Clock
    from bridge.service.parts import Parts
    from bridge.upstream.adapter import UpstreamAdapter

log = structlog.get_logger()


def needs_online(credential: Credential) -> bool:
    """Credentials the cache cannot judge at all (Digital ID tokens live only at Digital ID)."""
    return isinstance(credential, DigitalIdToken)


class UpstreamAsk:
    def __init__(self, config: Config, parts: Parts, health: Health, submit: Submit, clock: Clock) -> None:
        self.config = config  # the daemon replaces it on reload
        self.parts = parts
        self.health = health
        self.submit = submit
        self.clock = clock
        self.late_denials = LateDenials()
        self.late_tasks: set[asyncio.Task[AccessDecision]] = set()

    async def adapter_for(self, credential: Credential, source: Source) -> UpstreamAdapter | None:
        """The upstream this scan goes to, or None for the cache alone (see `route`)."""
        adapter, settled = self.route(credential, source)
        if settled:
            return adapter
        knows = await asyncio.wrap_future(self.submit(self._cache_holds_invite, credential))
        return None if knows else adapter

    def route(self, credential: Credential, source: Source) -> tuple[UpstreamAdapter | None, bool]:
        """(the upstream to ask or None, settled). `online-first` asks for everything an adapter
        accepts; `local-first` asks for what the cache cannot judge (Digital ID tokens, an invite
        code the cache does not hold) and whatever an upstream decides alone (SNA). Not settled:
        an invite code, which only the cache, on the worker, can say whether it holds.

        Pure and cheap, so an input thread can call it: a scan routed to no upstream goes
        straight to the decision worker (ScanPipeline.emit)."""
        mode = self.config.bridge.mode
        if mode == "local-only":
            return None, True
        adapter = next((a for a in self.parts.adapters if a.accepts(credential, source)), None)
        if adapter is None or mode == "online-first" or getattr(adapter, "decides_alone", False) or needs_online(credential):
            return adapter, True
        if isinstance(credential, InviteCode):
            return adapter, False
        return None, True

    def _cache_holds_invite(self, credential: InviteCode) -> bool:
        """On the worker: can the (fresh) cache judge this invite code itself?"""
        from verifier.hashing import hash_invite

        return (not self.parts.verifier.is_stale(self.clock())
                and self.parts.cache.visitor(hash_invite(credential.code)) is not None)

    async def ask(self, adapter: UpstreamAdapter, credential: Credential, reader_id: str,
                  source: Source) -> AccessDecision | None:
        """One attempt within the budget; None lets the cache decide."""
        from bridge.upstream.errors import UpstreamError

        budget = self.config.upstream.http.verify_budget_s
        task = asyncio.ensure_future(adapter.verify(credential, reader_id, source))
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            self.late_tasks.add(task)
            task.add_done_callback(lambda t: self._late_answer(t, credential))
            self.health.mark_upstream(False, f"{adapter.name}: no answer within the {budget} s verify budget",
                                      check="the central is slow or unreachable from the Pi; decisions continue from the "
                                            "cache (raise upstream.http.verify_budget_s if the central is always this slow)")
            return None
        try:
            decision = task.result()
        except UpstreamError as e:
            self.health.mark_upstream(False, str(e), check=check_for(e), name=adapter.name)
            return None
        self.health.mark_upstream(True, name=adapter.name)
        return decision

    def _late_answer(self, task: asyncio.Task[AccessDecision], credential: Credential) -> None:
        """On the loop: the answer to a request the scan stopped waiting for."""
        self.late_tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        decision = task.result()
        if not decision.granted:
            self.submit(self._record_late_denial, credential, decision)

    def _record_late_denial(self, credential: Credential, denial: AccessDecision) -> None:
        until = self.late_denials.note(credential_key(credential), denial, to_ms(self.clock()))
        held = iso(from_ms(until)) if until is not None else None
        self.parts.outbox.append("LATE_UPSTREAM_DENY", {**denial.as_wire(), "bridgeId": self.config.bridge.id,
                                                        "heldUntil": held})
        log.warning("upstream_late_deny", reader=denial.reader_id, reason=denial.reason.value if denial.reason else "-",
                    cred=denial.fingerprint, held_until=held or "not held (the reason may change)",
                    check="the central denied after the verify budget, so the cache decided that scan; "
                          "see door-bridge events tail; raise upstream.http.verify_budget_s if this repeats")
