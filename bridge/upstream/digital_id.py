"""Digital ID building access: `verify-token` by GET (query) or POST (JSON).

Access is granted iff `success` and `valid` are both true. Every documented error code maps onto
our reasons or errors; an undocumented one is still a denial (NO_GRANT, the code kept in the
audit row), as the seed's step 3 says of any `success: false`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bridge.upstream.adapter import online_decision, safe_word
from bridge.config.secret_files import ApiKey
from bridge.config.upstream import DigitalIdSection
from bridge.upstream.errors import (
    UpstreamNotApplicable,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bridge.upstream.http import UpstreamHttp
from bridge.upstream.wire import parse_body
from verifier.types import (
    AccessDecision,
    Credential,
    Decision,
    DigitalIdToken,
    Reason,
    Source,
)

NAME = "digital_id"

# The seed's error table → our reasons. `unauthorized` and `server_error` are errors, not denials.
ERROR_REASONS: dict[str, Reason] = {
    "expired": Reason.CREDENTIAL_EXPIRED,
    "revoked": Reason.GRANT_REVOKED,
    "card_expired": Reason.OUT_OF_DATE_WINDOW,
    "employee_inactive": Reason.HOLDER_INACTIVE,
    "token_not_found": Reason.NO_GRANT,
    "missing_token": Reason.MALFORMED_CREDENTIAL,
    "invalid_type": Reason.MALFORMED_CREDENTIAL,
}

# Our source → the seed's `type` (qr | nfc | ble). We have no BLE input.
VERIFICATION_TYPE: dict[Source, str | None] = {
    Source.PHONE_QR: "qr",
    Source.PHONE_NFC: "nfc",
    Source.CARD: "qr",  # a Digital ID token only ever comes from its QR URL, whatever scanned it
    Source.VISITOR: "qr",
    Source.KEYPAD: None,
}


class Employee(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: int | str | None = None
    full_name: str | None = None


class VerifyTokenAnswer(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    success: bool
    valid: bool
    error: str | None = None
    employee: Employee | None = None


class DigitalIdAdapter:
    name = NAME
    decides_alone = False
    has_heartbeat = False

    def __init__(
        self, http: UpstreamHttp, section: DigitalIdSection, api_key: ApiKey | None, verify_budget_s: float
    ) -> None:
        self._http = http
        self._section = section
        self._api_key = api_key
        self._budget_s = verify_budget_s

    def accepts(self, credential: Credential, source: Source) -> bool:
        return isinstance(credential, DigitalIdToken) and VERIFICATION_TYPE.get(source) is not None

    async def verify(self, credential: Credential, reader_id: str, source: Source) -> AccessDecision:
        kind = VERIFICATION_TYPE.get(source)
        if kind is None or not isinstance(credential, DigitalIdToken):
            raise UpstreamNotApplicable(NAME, f"cannot verify a {credential.kind} credential from {source.value}")
        fields = {"token": credential.token, "type": kind, "device_id": self._section.device_id or reader_id}
        if self._section.location:
            fields["location"] = self._section.location
        method, path = self._section.method, self._section.path
        what = f"{method} {path}"
        headers = {"X-API-Key": self._api_key.reveal()} if self._api_key else None
        if method == "GET":
            answer = await self._http.request("GET", path, params=fields, headers=headers, budget_s=self._budget_s)
        else:
            answer = await self._http.request("POST", path, json_body=fields, headers=headers, budget_s=self._budget_s)
        if answer.status == 401:
            raise _unauthorized(what)
        if answer.status == 404 and not answer.json_ok:
            raise UpstreamRejected(NAME, f"{what}: not found (404)", hint="check upstream.digital_id.base_url and path", status=404)
        if answer.status not in (200, 400, 403):
            raise UpstreamProtocolError(NAME, f"{what}: unexpected HTTP {answer.status}", status=answer.status)
        parsed = parse_body(NAME, what, VerifyTokenAnswer, answer.body)
        employee = parsed.employee
        user_id = str(employee.id) if employee and employee.id is not None else None
        user_name = employee.full_name if employee else None
        if parsed.success and parsed.valid:
            if answer.status != 200:
                raise UpstreamProtocolError(NAME, f"{what}: success with HTTP {answer.status}", status=answer.status)
            return online_decision(credential, reader_id, source, Decision.GRANT, None, user_id=user_id, user_name=user_name)
        reason, raw = self._reason(what, parsed.error, answer.status)
        return online_decision(credential, reader_id, source, Decision.DENY, reason, user_id=user_id,
                               user_name=user_name, upstream_reason=raw)

    def _reason(self, what: str, error: str | None, status: int) -> tuple[Reason, str | None]:
        """(our reason, the raw code when it is not one the seed documents)."""
        if error is None:
            # The seed: "If success: false or valid: false: Deny access", code or not.
            return Reason.NO_GRANT, None
        if error == "unauthorized":
            raise _unauthorized(what)
        if error == "server_error":
            raise UpstreamUnavailable(NAME, f"{what}: server_error (HTTP {status})", status=status)
        reason = ERROR_REASONS.get(error)
        if reason is None:
            # A denial is a denial whatever its code: NO_GRANT, the code kept for the audit row.
            return Reason.NO_GRANT, safe_word(error)
        return reason, None

    async def heartbeat(self, reader_id: str) -> None:
        """The seed documents no heartbeat: nothing to send."""

    async def aclose(self) -> None:
        await self._http.aclose()


def _unauthorized(what: str) -> UpstreamRejected:
    return UpstreamRejected(
        NAME,
        f"{what}: API key refused (unauthorized)",
        hint="the organisation requires an API key (REQUIRE_API_KEY_FOR_VERIFICATION); check that "
        "upstream.digital_id.api_key_file / api_key_credential holds a current key from the organisation settings",
        status=401,
    )
