"""Stayforge SNA fake: the terminal identify endpoint (path assumed, see docs/upstreams.md) and
`POST /card/add` as documented, both requiring `X-Environment`.

Card windows follow the SNA time rule: a datetime without an offset is UTC; `[start_at, end_at)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from tests.support.fakes.server import FakeServer, RecordedRequest, Reply

ENVIRONMENT = "standard"
ACCESS_TOKEN = "sna-test-access-token"


def parse_sna_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class FakeSna:
    environments: set[str] = field(default_factory=lambda: {ENVIRONMENT})
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    identify_path: str = "/card/identify"
    server: FakeServer = field(default_factory=FakeServer)

    def __post_init__(self) -> None:
        self.server.routes[("POST", self.identify_path)] = self._identify
        self.server.routes[("POST", "/card/add")] = self._add

    def _environment_error(self, request: RecordedRequest) -> Reply | None:
        if request.headers.get("x-environment") not in self.environments:
            return Reply(400, {"detail": "missing or unknown X-Environment"})
        return None

    def _add(self, request: RecordedRequest) -> Reply:
        if request.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return Reply(401, {"detail": "Not authenticated"})
        if (refusal := self._environment_error(request)) is not None:
            return refusal
        body = request.json
        if not (isinstance(body, dict) and isinstance(body.get("number"), str)):
            return Reply(422, {"detail": "number is required"})
        self.cards[body["number"]] = body
        return Reply(201, body)

    def _identify(self, request: RecordedRequest) -> Reply:
        if (refusal := self._environment_error(request)) is not None:
            return refusal
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("number"), str):
            return Reply(422, {"detail": "number is required"})
        identity = {body.get(k) for k in ("device_sn", "device_id", "mac")} - {None}
        if not identity:
            return Reply(422, {"detail": "device_sn, device_id or mac is required"})
        card = self.cards.get(body["number"])
        if card is None:
            return Reply(200, {"command": "deny", "card": None})
        public = {k: card.get(k) for k in ("number", "name", "start_at", "end_at", "devices")}
        now = self.now()
        in_window = (card.get("start_at") is None or parse_sna_time(card["start_at"]) <= now) and (
            card.get("end_at") is None or now < parse_sna_time(card["end_at"])
        )
        bound = bool(identity & set(card.get("devices") or []))
        return Reply(200, {"command": "unlock" if in_window and bound else "deny", "card": public})
