"""Frontelio `/access` fake: `POST /api/v1/access/verify` and `/access/reader-heartbeat`.

Checks `Authorization: Bearer mk_…` against its key set (401 otherwise), answers 402 when the
tenant is plan-gated, validates the documented bodies (400 otherwise), and applies the 2 s
replay rule per (credentialId, readerId).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.fakes.server import FakeServer, RecordedRequest, Reply

SOURCES = frozenset({"PHONE_NFC", "PHONE_QR", "VISITOR", "CARD"})
REASONS = frozenset(
    {"NO_GRANT", "GRANT_REVOKED", "OUT_OF_SHIFT_WINDOW", "OUT_OF_DATE_WINDOW", "CREDENTIAL_EXPIRED",
     "SIGNATURE_INVALID", "UNKNOWN_READER", "RATE_LIMITED"}
)
API_KEY = "mk_5RHzN8qPmZbcD2EfQ7jX0aB1cD2eF3gH4iJ5kL6mN7o"


@dataclass(frozen=True)
class Holder:
    userId: str
    userName: str
    zoneName: str
    deny_reason: str | None = None  # None: GRANT


@dataclass
class FakeFrontelio:
    api_keys: set[str] = field(default_factory=lambda: {API_KEY})
    credentials: dict[str, Holder] = field(default_factory=dict)
    plan_gated: bool = False
    # False: never answer `replay: true` (the document's 2 s rule is the central's choice; another
    # central may not apply it, and the door must not depend on it).
    replay_rule: bool = True
    server: FakeServer = field(default_factory=lambda: FakeServer(prefix="/api/v1"))

    def __post_init__(self) -> None:
        self._recent: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self.heartbeats: list[dict[str, Any]] = []
        self.server.routes[("POST", "/access/verify")] = self._verify
        self.server.routes[("POST", "/access/reader-heartbeat")] = self._heartbeat

    def _gate(self, request: RecordedRequest) -> Reply | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.api_keys:
            return Reply(401, {"statusCode": 401, "message": "Invalid API key"})
        if self.plan_gated:
            return Reply(402, {"statusCode": 402, "message": "Payment Required", "upgradeUrl": "https://app.frontelio.com/billing"})
        return None

    def _verify(self, request: RecordedRequest) -> Reply:
        if (refusal := self._gate(request)) is not None:
            return refusal
        body = request.json
        if not (
            isinstance(body, dict)
            and isinstance(body.get("credentialId"), str)
            and isinstance(body.get("readerId"), str)
            and body.get("source") in SOURCES
        ):
            return Reply(400, {"statusCode": 400, "message": "credentialId, readerId and source are required"})
        key = (body["credentialId"], body["readerId"])
        now = time.monotonic()
        seen = self._recent.get(key)
        if self.replay_rule and seen is not None and now - seen[0] < 2.0:
            return Reply(200, {**seen[1], "replay": True})
        holder = self.credentials.get(body["credentialId"])
        if holder is None:
            answer: dict[str, Any] = {"decision": "DENY", "userId": None, "userName": None, "zoneName": None,
                                      "reason": "NO_GRANT", "replay": False}
        else:
            answer = {"decision": "DENY" if holder.deny_reason else "GRANT", "userId": holder.userId,
                      "userName": holder.userName, "zoneName": holder.zoneName, "reason": holder.deny_reason,
                      "replay": False}
        self._recent[key] = (now, answer)
        return Reply(200, answer)

    def _heartbeat(self, request: RecordedRequest) -> Reply:
        if (refusal := self._gate(request)) is not None:
            return refusal
        body = request.json
        if not (isinstance(body, dict) and all(isinstance(body.get(k), str) for k in ("readerId", "firmwareVersion", "ipAddress"))):
            return Reply(400, {"statusCode": 400, "message": "readerId, firmwareVersion and ipAddress are required"})
        self.heartbeats.append(body)
        return Reply(200, {"ok": True})


@dataclass
class Webhook:
    """`POST /access/webhooks/:integrationId` as documented: public, `X-Signature` = hex
    HMAC-SHA256 of the raw body keyed by the integration's webhook secret, 200 even for events it
    drops. Keeps what a careful receiver would: events deduplicated by `id`, in arrival order,
    and the counts of repeats and of bodies whose signature did not verify."""

    secret: str
    events: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    bad_signatures: int = 0

    def handle(self, request: RecordedRequest) -> Reply:
        import hashlib
        import hmac

        expected = hmac.new(self.secret.encode(), request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-signature", "")):
            self.bad_signatures += 1
            return Reply(200, {"received": False})
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return Reply(200, {"received": False})
        if any(e["id"] == body["id"] for e in self.events):
            self.duplicates += 1
        else:
            self.events.append(body)
        return Reply(200, {"received": True})


def add_webhook(fake: FakeFrontelio, integration_id: str, secret: str) -> Webhook:
    hook = Webhook(secret)
    fake.server.routes[("POST", f"/access/webhooks/{integration_id}")] = hook.handle
    return hook
