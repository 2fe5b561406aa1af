"""Digital ID fake: `GET` and `POST /api/verify-token.php` with the documented bodies and codes.

With `api_key` set it behaves as REQUIRE_API_KEY_FOR_VERIFICATION=1: `X-API-Key` header (or the
`api_key` parameter) must match, else 401 `unauthorized`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.fakes.server import FakeServer, RecordedRequest, Reply

PATH = "/api/verify-token.php"
VERIFIED_AT = "2025-01-15T10:30:00+00:00"
TYPES = frozenset({"qr", "nfc", "ble"})
# Token states and their documented (error code, HTTP status).
FAILURES = {
    "token_not_found": 403,
    "expired": 403,
    "revoked": 403,
    "card_expired": 403,
    "employee_inactive": 403,
    "server_error": 500,
}


def employee(id: int, full_name: str) -> dict[str, Any]:
    first, _, last = full_name.partition(" ")
    return {
        "id": id, "employee_reference": f"EMP{id:03d}", "display_reference": f"EMP{id:03d}",
        "first_name": first, "last_name": last, "full_name": full_name,
        "organisation_id": 1, "organisation_name": "Example Organisation", "is_active": True,
    }


@dataclass
class FakeDigitalId:
    # token → "valid" or one of FAILURES, plus the employee it belongs to.
    tokens: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    api_key: str | None = None
    server: FakeServer = field(default_factory=FakeServer)

    def __post_init__(self) -> None:
        self.server.routes[("GET", PATH)] = self._verify
        self.server.routes[("POST", PATH)] = self._verify

    def _verify(self, request: RecordedRequest) -> Reply:
        fields = request.query if request.method == "GET" else (request.json if isinstance(request.json, dict) else {})
        if self.api_key is not None:
            presented = request.headers.get("x-api-key") or fields.get("api_key")
            if presented != self.api_key:
                return _failure(401, "unauthorized", "Invalid API key")
        token = fields.get("token")
        if not token:
            return _failure(400, "missing_token", "Token parameter is missing")
        if fields.get("type", "qr") not in TYPES:
            return _failure(400, "invalid_type", "Invalid verification type")
        state, person = self.tokens.get(token, ("token_not_found", {}))
        if state != "valid":
            return _failure(FAILURES[state], state, f"Verification failed: {state}")
        return Reply(200, {
            "success": True, "valid": True, "employee": person,
            "id_card": {"id": 456, "expires_at": "2025-12-31 23:59:59"},
            "verification_type": fields.get("type", "qr"), "verified_at": VERIFIED_AT,
            "message": "Verification successful",
        })


def _failure(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"success": False, "valid": False, "message": message, "error": code, "verified_at": VERIFIED_AT})
