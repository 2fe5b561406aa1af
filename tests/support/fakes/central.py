"""A central speaking the bridge protocol (docs/bridge-protocol.md) on loopback.

Bundles: give it records (`publish_full`) or changes (`publish_delta`); it keeps the version
history, signs with a key it holds (default: the key tests pin), and answers `since=` with a delta
when every step since then was a delta, else a full bundle (or 410 with `gone_when_no_delta`),
304 when nothing is newer or the `If-None-Match` matches its `ETag`. `tamper_bundles()` appends a
record after signing. Events: stored idempotently by id in arrival order (`events`), repeats
answered as `duplicates`. Faults: everything of `FakeServer` (go_down, slow, fail_with,
drop_connections), plus `drop_mid_batch(n)`: store the first n events of the next batch, then
hang up without an answer, as a central that crashed mid-write would.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.builders import DAY, NOW, PIN_HASHING, SIGNING_KEY, make_bundle
from tests.support.fakes.server import FakeServer, RecordedRequest, Reply
from verifier.hashing import PinHashing

API_KEY = "cbk_Qm9yZGVyQnJpZGdlVGVzdEtleTAwMDAwMDAwMDA"


def write_api_key(path: Path) -> Path:
    """The central's key as a bridge reads it: `upstream.central.api_key_file`, mode 0600."""
    path.write_text(API_KEY + "\n")
    path.chmod(0o600)
    return path
PREFIX = "/api/bridge/v1"
BUNDLE_MEDIA_TYPE = "application/x-door-bridge-bundle"
_KEY_FIELD = {"card": "number", "ic_card": "cardNumber", "key": "kid"}


@dataclass(frozen=True)
class HeaderReply(Reply):
    headers: tuple[tuple[str, str], ...] = ()


class _DropConnection(Exception):
    """Raised inside a handler: the server closes the socket without an answer."""


@dataclass
class _HeaderServer(FakeServer):
    """FakeServer that also sends a reply's extra headers (ETag)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._local = threading.local()

    def start(self) -> "_HeaderServer":
        super().start()
        assert self._httpd is not None
        base = self._httpd.RequestHandlerClass
        local = self._local

        class _WithHeaders(base):  # type: ignore[valid-type, misc]
            def end_headers(self) -> None:
                for name, value in getattr(local, "headers", ()):
                    self.send_header(name, value)
                local.headers = ()
                super().end_headers()

        self._httpd.RequestHandlerClass = _WithHeaders
        return self

    def _dispatch(self, request: RecordedRequest) -> Reply | None:
        self._local.headers = ()
        reply = super()._dispatch(request)
        if isinstance(reply, HeaderReply):
            self._local.headers = reply.headers
        return reply


@dataclass(frozen=True)
class Served:
    since: int
    status: int
    kind: str | None = None
    version: int | None = None


def record_key(record: dict[str, Any]) -> tuple[str, str]:
    kind = record["type"]
    return kind, str(record[_KEY_FIELD.get(kind, "id")])


@dataclass
class FakeCentral:
    bridge_id: str = "BRIDGE-1"
    api_keys: set[str] = field(default_factory=lambda: {API_KEY})
    signing_key: Ed25519PrivateKey = SIGNING_KEY
    pin_hashing: PinHashing | None = PIN_HASHING
    issued_at: datetime = NOW
    not_after: datetime = NOW + 7 * DAY
    deltas: bool = True
    gone_when_no_delta: bool = False
    send_etag: bool = True
    max_batch: int = 1000
    accept_at_most: int | None = None  # answer 200 for only the first n events of each batch
    reject_types: set[str] = field(default_factory=set)  # events of these types come back `rejected`
    server: FakeServer = field(default_factory=lambda: _HeaderServer(prefix=PREFIX))

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.version = 0
        self._state: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: dict[int, list[dict[str, Any]] | None] = {}  # None: a full publish
        self._tamper = False
        self._drop_after: int | None = None
        self._raw_bundle: tuple[bytes, str] | None = None
        self.events: dict[str, dict[str, Any]] = {}
        self.duplicates_seen: list[str] = []
        self.served: list[Served] = []
        base = f"/bridges/{self.bridge_id}"
        self.server.routes[("GET", f"{base}/bundle")] = self._bundle
        self.server.routes[("POST", f"{base}/events")] = self._ingest
        self.server.routes[("GET", f"{base}/commands")] = self._commands
        self.commands: list[str] = []  # signed command tokens; a token's seq is its index + 1

    @property
    def url(self) -> str:
        return self.server.url

    # --- what the central publishes ------------------------------------------------------------

    def publish_full(self, records: Iterable[dict[str, Any]]) -> int:
        with self._lock:
            self._state = {record_key(r): r for r in records}
            self.version += 1
            self._history[self.version] = None
            self._tamper, self._raw_bundle = False, None
            return self.version

    def publish_delta(self, changes: Iterable[dict[str, Any]]) -> int:
        """Upserts and `"op": "delete"` records, applied in order to the current state."""
        changes = list(changes)
        with self._lock:
            for r in changes:
                if r.get("op") == "delete":
                    self._state.pop(record_key(r), None)
                else:
                    self._state[record_key(r)] = r
            self.version += 1
            self._history[self.version] = changes
            self._tamper, self._raw_bundle = False, None
            return self.version

    def tamper_bundles(self) -> None:
        """Until the next publish, every bundle body gets one record more than was signed."""
        self._tamper = True

    def serve_raw_bundle(self, body: bytes, version: int) -> None:
        """Answer every fetch below `version` with these exact bytes (benchmarks, odd bundles)."""
        with self._lock:
            self.version = version
            self._raw_bundle = (body, f'"raw-{version}"')

    def drop_mid_batch(self, after: int) -> None:
        """The next batch: store its first `after` events (all of them if it is shorter), then
        close the connection without an answer."""
        self._drop_after = after

    def publish_command(self, token: str) -> int:
        """List a signed command (or any string: the bridge must refuse what is not one)."""
        with self._lock:
            self.commands.append(token)
            return len(self.commands)

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state.values())

    # --- handlers ------------------------------------------------------------------------------

    def _gate(self, request: RecordedRequest) -> Reply | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.api_keys:
            return Reply(401, {"error": "unauthorized"})
        return None

    def _bundle(self, request: RecordedRequest) -> Reply:
        if (refusal := self._gate(request)) is not None:
            return refusal
        since_text = request.query.get("since", "")
        if not since_text.isdigit():
            return Reply(400, {"error": "since must be a non-negative integer"})
        since = int(since_text)
        with self._lock:
            latest = self.version
            if since == latest or latest == 0:
                self.served.append(Served(since, 304))
                return HeaderReply(304, raw=b"", content_type=BUNDLE_MEDIA_TYPE)
            if self._raw_bundle is not None:
                body, etag = self._raw_bundle
                return self._bundle_reply(request, since, body, etag, "raw", latest)
            chain = [self._history.get(v) for v in range(since + 1, latest + 1)]
            delta_possible = 0 < since < latest and all(c is not None for c in chain)
            if since > 0 and not (self.deltas and delta_possible) and self.gone_when_no_delta and since < latest:
                self.served.append(Served(since, 410))
                return Reply(410, {"error": "gone", "message": "no delta from that version; ask since=0"})
            if self.deltas and delta_possible:
                kind, base, recs = "delta", since, [r for c in chain for r in (c or [])]
            else:
                kind, base, recs = "full", None, list(self._state.values())
            etag = f'"v{latest}-{kind}-from{base or 0}"'
            if self.send_etag and request.headers.get("if-none-match") == etag:
                self.served.append(Served(since, 304, kind, latest))
                return HeaderReply(304, raw=b"", content_type=BUNDLE_MEDIA_TYPE, headers=(("ETag", etag),))
            body = make_bundle(recs, version=latest, kind=kind, base_version=base, key=self.signing_key,
                               issued_at=self.issued_at, not_after=self.not_after, pin_hashing=self.pin_hashing)
            if self._tamper:
                body += b'{"type":"user","id":"user_intruder","name":"Intruder"}\n'
            return self._bundle_reply(request, since, body, etag, kind, latest)

    def _bundle_reply(self, request: RecordedRequest, since: int, body: bytes, etag: str, kind: str, version: int) -> Reply:
        self.served.append(Served(since, 200, kind, version))
        headers = (("ETag", etag),) if self.send_etag else ()
        return HeaderReply(200, raw=body, content_type=BUNDLE_MEDIA_TYPE, headers=headers)

    def _commands(self, request: RecordedRequest) -> Reply:
        if (refusal := self._gate(request)) is not None:
            return refusal
        since_text = request.query.get("since", "")
        if not since_text.isdigit():
            return Reply(400, {"error": "since must be a non-negative integer"})
        with self._lock:
            listed = [{"seq": i + 1, "token": t} for i, t in enumerate(self.commands) if i + 1 > int(since_text)]
        return Reply(200, {"commands": listed})

    def _ingest(self, request: RecordedRequest) -> Reply:
        if (refusal := self._gate(request)) is not None:
            return refusal
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            return Reply(400, {"error": "body must be {\"events\": [...]}"})
        events: list[Any] = body["events"]
        if len(events) > self.max_batch:
            return Reply(413, {"error": f"at most {self.max_batch} events per request"})
        stored: list[str] = []
        duplicates: list[str] = []
        rejected: list[dict[str, str]] = []
        with self._lock:
            for i, event in enumerate(events):
                if self.accept_at_most is not None and i >= self.accept_at_most:
                    break
                if self._drop_after is not None and i == self._drop_after:
                    self._drop_after = None
                    raise _DropConnection()
                problem = _event_problem(event)
                if problem is not None:
                    if isinstance(event, dict) and isinstance(event.get("id"), str):
                        rejected.append({"id": event["id"], "error": problem})
                    continue
                if event["type"] in self.reject_types:
                    rejected.append({"id": event["id"], "error": f"type {event['type']} not accepted"})
                elif event["id"] in self.events:
                    duplicates.append(event["id"])
                    self.duplicates_seen.append(event["id"])
                else:
                    self.events[event["id"]] = event
                    stored.append(event["id"])
            if self._drop_after is not None:  # the batch was no longer than n: stored it all, then hang up
                self._drop_after = None
                raise _DropConnection()
        return Reply(200, {"stored": stored, "duplicates": duplicates, "rejected": rejected})


def _event_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "not an object"
    for key in ("id", "at", "type"):
        if not isinstance(event.get(key), str) or not event[key]:
            return f"{key} must be a non-empty string"
    try:
        uuid.UUID(event["id"])
    except ValueError:
        return "id must be a UUID"
    return None


def serve_in_process(pipe: Any, bundle_path: str | None = None, bundle_version: int = 0) -> None:
    """`multiprocessing` target for benchmarks: a FakeCentral in its own process, so serving does
    not share the measured process's GIL or memory. Sends the port, then waits for any message
    and answers with {"stored": n, "duplicates": n} before stopping."""
    fake = FakeCentral()
    if bundle_path is not None:
        with open(bundle_path, "rb") as f:
            fake.serve_raw_bundle(f.read(), bundle_version)
    fake.server.start()
    pipe.send(fake.server.port)
    pipe.recv()
    pipe.send({"stored": len(fake.events), "duplicates": len(fake.duplicates_seen)})
    fake.server.stop()
