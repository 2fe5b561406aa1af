"""Stayforge Networks Access (SNA): the terminal flow.

The terminal sends its identity (SN / Device ID / MAC) and the scanned card number; SNA answers
with a command to unlock or to deny, and the terminal obeys without local verification. The
terminal endpoint takes no authentication, only the `X-Environment` header.

The seed does not spell out the identify path nor its bodies. Assumed (docs/upstreams.md, and the
fake in tests/support/fakes/sna.py speaks the same):
    POST /card/identify   X-Environment: standard
    {"number": "6B06…", "device_sn": "…", "device_id": "…", "mac": "AA:BB:…"}   (identity: those set)
    200 {"command": "unlock" | "deny",
         "card": {"number", "name", "start_at", "end_at", "devices"?} | null}
Every name and value of that exchange is `[upstream.sna.identify]` (method, body field names,
the answer's command field and its unlock/deny values, an optional auth header), with this
assumption as the default. Datetimes follow the SNA rule: ISO 8601, and one without an offset is UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from bridge.upstream.adapter import online_decision
from bridge.config.secret_files import ApiKey
from bridge.config.upstream import SnaSection
from bridge.upstream.errors import (
    UpstreamNotApplicable,
    UpstreamProtocolError,
    status_error,
)
from bridge.upstream.http import UpstreamHttp
from bridge.upstream.wire import parse_body
from verifier.timeutil import TimeFormatError, parse_instant, to_ms
from verifier.types import (
    AccessDecision,
    CardNumber,
    Credential,
    Decision,
    OnlineTerms,
    Reason,
    Source,
)

NAME = "sna"


class SnaCard(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    number: str
    name: str | None = None
    start_at: str | None = None
    end_at: str | None = None
    # The devices the card is bound to, when SNA says (kept so offline follows the same rule).
    devices: list[str] | None = None


def _at(body: Any, path: str) -> Any:
    """The value at a dotted path in a JSON answer, or None."""
    for part in path.split(".") if path else []:
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


def _matches(value: Any, wanted: list[str | bool | int]) -> bool:
    """JSON true is not the string "true", nor 1: types must agree, as TOML and JSON spell them."""
    return any(type(value) is type(w) and value == w for w in wanted)


class SnaAdapter:
    name = NAME
    # "The terminal device only transmits data and executes the server's command — it does not
    # perform any local verification": asked for every card, in local-first too.
    decides_alone = True
    has_heartbeat = False

    def __init__(
        self,
        http: UpstreamHttp,
        section: SnaSection,
        verify_budget_s: float,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        api_key: ApiKey | None = None,
    ) -> None:
        self._http = http
        self._path = section.identify_path
        self._map = section.identify
        self._headers = {"X-Environment": section.environment}
        self._api_key = api_key
        m = section.identify
        self._identity = {
            key: value
            for key, value in ((m.device_sn_field, section.device_sn), (m.device_id_field, section.device_id),
                               (m.mac_field, section.mac))
            if value
        }
        self._budget_s = verify_budget_s
        self._now = now

    def accepts(self, credential: Credential, source: Source) -> bool:
        """Card numbers and barcode/QR content that parsed as a card number; never a keypad PIN."""
        return isinstance(credential, CardNumber)

    async def verify(self, credential: Credential, reader_id: str, source: Source) -> AccessDecision:
        if not isinstance(credential, CardNumber):
            raise UpstreamNotApplicable(NAME, f"SNA identifies card numbers only, not a {credential.kind} credential")
        m = self._map
        what = f"{m.method} {self._path}"
        fields = {m.number_field: credential.number, **self._identity}
        headers = dict(self._headers)
        if self._api_key is not None and m.auth_header:
            headers[m.auth_header] = f"{m.auth_scheme} {self._api_key.reveal()}" if m.auth_scheme else self._api_key.reveal()
        if m.method == "GET":
            answer = await self._http.request("GET", self._path, params=fields, headers=headers, budget_s=self._budget_s)
        else:
            answer = await self._http.request("POST", self._path, json_body=fields, headers=headers, budget_s=self._budget_s)
        if answer.status != 200:
            raise _status_error(what, answer.status)
        if not isinstance(answer.body, dict):
            raise UpstreamProtocolError(NAME, f"{what}: expected a JSON object")
        command = _at(answer.body, m.command_field)
        raw_card = _at(answer.body, m.card_field) if m.card_field else None
        if raw_card is not None and not isinstance(raw_card, dict):
            raise UpstreamProtocolError(NAME, f"{what}: {m.card_field} is not an object")
        card = parse_body(NAME, what, SnaCard, raw_card) if raw_card is not None else None
        user_name = card.name if card else None
        if _matches(command, m.unlock_values):
            return online_decision(credential, reader_id, source, Decision.GRANT, None, user_name=user_name,
                                   terms=self._terms(what, card))
        if _matches(command, m.deny_values):
            return online_decision(credential, reader_id, source, Decision.DENY, self._deny_reason(what, card),
                                   user_name=user_name)
        raise UpstreamProtocolError(
            NAME, f"{what}: {m.command_field} is neither an unlock nor a deny value "
            "(check upstream.sna.identify.command_field / unlock_values / deny_values)")

    def _terms(self, what: str, card: SnaCard | None) -> OnlineTerms | None:
        """The window and devices of an unlocked card, for the learned offline cache."""
        if card is None:
            return None
        start, end = self._window(what, card)
        return OnlineTerms(to_ms(start) if start else None, to_ms(end) if end else None,
                           tuple(card.devices) if card.devices is not None else None)

    def _window(self, what: str, card: SnaCard) -> tuple[datetime | None, datetime | None]:
        try:
            start = parse_instant(card.start_at, "card.start_at") if card.start_at is not None else None
            end = parse_instant(card.end_at, "card.end_at") if card.end_at is not None else None
        except TimeFormatError as e:
            raise UpstreamProtocolError(NAME, f"{what}: {e}") from None
        return start, end

    def _deny_reason(self, what: str, card: SnaCard | None) -> Reason:
        """SNA gives a command, not a reason: unknown card → NO_GRANT; a known card outside its
        `[start_at, end_at)` → OUT_OF_DATE_WINDOW; otherwise (not bound to this device) NO_GRANT."""
        if card is None:
            return Reason.NO_GRANT
        start, end = self._window(what, card)
        now = self._now()
        if (start is not None and now < start) or (end is not None and now >= end):
            return Reason.OUT_OF_DATE_WINDOW
        return Reason.NO_GRANT

    async def heartbeat(self, reader_id: str) -> None:
        """The seed documents no heartbeat for terminals: nothing to send."""

    async def aclose(self) -> None:
        await self._http.aclose()


_REFUSED = ("refused", "the terminal endpoint is documented as unauthenticated; check upstream.sna.base_url and identify_path")
_REJECTIONS = {
    400: ("bad request", "check upstream.sna.environment (sent as X-Environment)"),
    401: _REFUSED,
    403: _REFUSED,
    404: ("not found", "check upstream.sna.base_url and upstream.sna.identify_path"),
}


def _status_error(what: str, status: int) -> Exception:
    return status_error(NAME, what, status, _REJECTIONS)
