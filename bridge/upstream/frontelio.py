"""Frontelio `/access`: `POST /access/verify` (the hot path) and `POST /access/reader-heartbeat`.

Both authenticate with the tenant's `mk_` API key as a Bearer token. Sources: Frontelio knows
PHONE_NFC, PHONE_QR, VISITOR and CARD; our KEYPAD has no Frontelio equivalent, and a PIN is a
local secret that must not leave the door, so keypad entries are never sent (decided locally).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from bridge import __version__
from bridge.upstream.adapter import central_deny_reason, online_decision
from bridge.config.secret_files import ApiKey
from bridge.upstream.errors import (
    UpstreamNotApplicable,
    UpstreamUnavailable,
    status_error,
)
from bridge.upstream.http import Answer, UpstreamHttp
from bridge.upstream.netinfo import source_address_towards
from bridge.upstream.wire import parse_body
from verifier.types import (
    AccessDecision,
    CardNumber,
    Credential,
    CredentialJwt,
    Decision,
    InviteCode,
    Source,
    secret_of,
)

NAME = "frontelio"
VERIFY_PATH = "/access/verify"
HEARTBEAT_PATH = "/access/reader-heartbeat"

# Our source → Frontelio's `source`. None: never sent to Frontelio (see module docstring).
FRONTELIO_SOURCE: dict[Source, str | None] = {
    Source.PHONE_NFC: "PHONE_NFC",
    Source.PHONE_QR: "PHONE_QR",
    Source.VISITOR: "VISITOR",
    Source.CARD: "CARD",
    Source.KEYPAD: None,
}

class VerifyAnswer(BaseModel):
    """The documented 200 body of /access/verify; unknown extra fields are tolerated."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    decision: Literal["GRANT", "DENY"]
    userId: str | None = None
    userName: str | None = None
    zoneName: str | None = None
    # Any word: a DENY is a DENY whatever its reason (`central_deny_reason` maps it).
    reason: str | None = None
    replay: bool = False

    @model_validator(mode="after")
    def _reason_matches_decision(self) -> "VerifyAnswer":
        if self.decision == "GRANT" and self.reason is not None:
            raise ValueError("a GRANT must carry reason null")
        return self


class FrontelioAdapter:
    name = NAME
    decides_alone = False
    has_heartbeat = True

    def __init__(self, http: UpstreamHttp, api_key: ApiKey, verify_budget_s: float) -> None:
        self._http = http
        self._api_key = api_key
        self._budget_s = verify_budget_s

    def accepts(self, credential: Credential, source: Source) -> bool:
        if FRONTELIO_SOURCE.get(source) is None:
            return False
        if isinstance(credential, InviteCode):
            return source is Source.VISITOR
        return isinstance(credential, (CredentialJwt, CardNumber))

    async def verify(self, credential: Credential, reader_id: str, source: Source) -> AccessDecision:
        wire_source = FRONTELIO_SOURCE.get(source)
        if wire_source is None or not self.accepts(credential, source):
            raise UpstreamNotApplicable(NAME, f"cannot verify a {credential.kind} credential from {source.value}")
        assert isinstance(credential, (CredentialJwt, CardNumber, InviteCode))
        credential_id = secret_of(credential)
        answer = await self._post(
            VERIFY_PATH,
            {"credentialId": credential_id, "readerId": reader_id, "source": wire_source},
            budget_s=self._budget_s,
        )
        parsed = parse_body(NAME, f"POST {VERIFY_PATH}", VerifyAnswer, answer.body)
        reason, raw = central_deny_reason(parsed.reason) if parsed.decision == "DENY" else (None, None)
        return online_decision(
            credential,
            reader_id,
            source,
            Decision(parsed.decision),
            reason,
            user_id=parsed.userId,
            user_name=parsed.userName,
            zone_name=parsed.zoneName,
            replay=parsed.replay,
            upstream_reason=raw,
        )

    async def heartbeat(self, reader_id: str) -> None:
        url = self._http.base_url
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            ip_address = await asyncio.to_thread(source_address_towards, url.host, port)
        except OSError as e:
            raise UpstreamUnavailable(NAME, f"no route to {url.host}: {e.strerror or type(e).__name__}") from None
        await self._post(
            HEARTBEAT_PATH,
            {"readerId": reader_id, "firmwareVersion": __version__, "ipAddress": ip_address},
            budget_s=None,
        )

    async def _post(self, path: str, body: dict[str, str], *, budget_s: float | None) -> Answer:
        auth = {"Authorization": f"Bearer {self._api_key.reveal()}"}
        answer = await self._http.request("POST", path, json_body=body, headers=auth, budget_s=budget_s)
        if 200 <= answer.status < 300:
            return answer
        raise _status_error(f"POST {path}", answer.status)

    async def aclose(self) -> None:
        await self._http.aclose()


_REJECTIONS = {
    401: ("API key refused", "check that api_key_file / api_key_credential holds a current, unrevoked mk_ key of this tenant"),
    402: ("plan-gated, Payment Required",
          "the tenant's plan lacks the accessControl feature (GROWTH and above); upgrade it in the Frontelio admin"),
    403: ("forbidden", "check the API key's outlet scope covers this reader, and that the key is a reader (mk_) key"),
    404: ("not found", "check upstream.frontelio.base_url (the documented prefix is /api/v1)"),
}


def _status_error(what: str, status: int) -> Exception:
    return status_error(NAME, what, status, _REJECTIONS)
