"""Offline decisions handed back to Frontelio through an integration webhook.

Frontelio logs every decision it makes online; the ones the door took alone (from the signed or
the learned cache, while Frontelio was unreachable or in local-first mode) it has never seen. Its
documented ingest is `POST /access/webhooks/:integrationId`: public, the body signed with
`X-Signature: hex(HMAC-SHA256(webhookSecret, raw body))`, answering 200 even for events it drops.

Delivery is one event per POST, in outbox order, at least once: the cursor (the outbox `seq` of
the last event Frontelio answered 2xx for) is fsync'd after each answer, so a crash between the
answer and the cursor write re-sends that one event — with the same `id`, by which the receiver
deduplicates. Nothing is deleted here: the outbox stays the record (and the central, if any,
still gets everything by replication). The payload is documented in docs/upstreams.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import structlog

from bridge.config.offline import WebhookSection
from bridge.config.secret_files import ApiKey, load_api_key
from bridge.config.upstream import HttpSettings, UpstreamSection
from bridge.state.export import is_offline_decision
from bridge.state.json_file import write_json
from bridge.state.outbox import Event, Outbox
from bridge.upstream.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from bridge.upstream.http import build_client
from verifier.timeutil import iso_seconds

log = structlog.get_logger()

CURSOR_FILE = "handback.cursor"
PAYLOAD_TYPE = "door_bridge.offline_decision"
# Credentials Frontelio judges (the adapter sends only these): a keypad PIN never leaves the door.
_FRONTELIO_KINDS = frozenset({"jwt", "card"})
_FIELDS = ("bridgeId", "door", "readerId", "decision", "reason", "decided", "source", "userId", "userName",
           "zoneId", "zoneName", "replay", "cacheVersion", "credentialKind", "credentialFingerprint")

Sleep = Callable[[float], Awaitable[Any]]


def for_frontelio(event: Event) -> bool:
    """An offline decision on a credential Frontelio judges (never a keypad PIN)."""
    return (is_offline_decision(event) and event.body.get("source") != "KEYPAD"
            and event.body.get("credentialKind") in _FRONTELIO_KINDS)


def payload(event: Event) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys in a fixed order."""
    body = {"type": PAYLOAD_TYPE, "id": event.id, "at": event.at,
            **{k: event.body.get(k) for k in _FIELDS}}
    body["decided"] = body["decided"] or "cache"  # rows written before `decided` existed
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: ApiKey, body: bytes) -> str:
    return hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest()


@dataclass
class HandbackState:
    online: bool | None = None
    cursor_seq: int = 0
    delivered: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None

    def as_status(self) -> dict[str, Any]:
        return {"online": self.online, "cursor_seq": self.cursor_seq, "delivered": self.delivered,
                "last_success_at": iso_seconds(self.last_success_at),
                "last_error": self.last_error}


class WebhookHandback:
    def __init__(self, client: httpx.AsyncClient, path: str, secret: ApiKey, outbox: Outbox, cursor_path: Path,
                 settings: HttpSettings, *, idle_s: float, clock: Callable[[], datetime]) -> None:
        self.client = client
        self.path = path
        self._secret = secret
        self.outbox = outbox
        self.cursor_path = cursor_path
        self.settings = settings
        self.idle_s = idle_s
        self.clock = clock
        self.state = HandbackState(cursor_seq=_read_cursor(cursor_path))

    async def deliver_pending(self, batch: int = 200) -> int:
        """Deliver every offline decision after the cursor; returns how many. Raises
        `UpstreamError` at the first that does not get a 2xx (the cursor stays before it)."""
        last = await asyncio.to_thread(self.outbox.last_seq)
        if self.state.cursor_seq > last:
            log.warning("handback_cursor_reset", cursor=self.state.cursor_seq, outbox_last=last,
                        check="audit.db was replaced (quarantined?); events are re-sent, deduplicated by id")
            await asyncio.to_thread(self._save_cursor, 0)
        sent = 0
        while True:
            events = await asyncio.to_thread(self.outbox.after, self.state.cursor_seq, batch)
            if not events:
                return sent
            for event in events:
                if for_frontelio(event):
                    await self._post(event)
                    sent += 1
                    self.state.delivered += 1
                await asyncio.to_thread(self._save_cursor, event.seq)

    async def _post(self, event: Event) -> None:
        body = payload(event)
        headers = {"Content-Type": "application/json", "X-Signature": signature(self._secret, body)}
        try:
            response = await self.client.post(self.path, content=body, headers=headers)
        except httpx.TransportError as e:
            raise UpstreamUnavailable("frontelio-webhook", f"POST {self.path}: {type(e).__name__}") from None
        await response.aclose()
        if 200 <= response.status_code < 300:
            self._mark(True, None)
            return
        what = f"POST {self.path}: HTTP {response.status_code}"
        if response.status_code >= 500 or response.status_code == 429:
            raise UpstreamUnavailable("frontelio-webhook", what)
        raise UpstreamRejected("frontelio-webhook", what, status=response.status_code,
                               hint="check offline.webhook.integration_id, base_url and the webhook secret")

    def _save_cursor(self, seq: int) -> None:
        write_json(self.cursor_path, {"seq": seq})
        self.state.cursor_seq = seq

    def _mark(self, ok: bool, error: str | None) -> None:
        state = self.state
        if ok:
            state.last_success_at = self.clock()
        state.last_error = error
        if state.online is not ok:
            state.online = ok
            if ok:
                log.info("handback_online", cursor=state.cursor_seq)
            else:
                log.warning("handback_offline", error=error, check="Frontelio reachable? offline.webhook settings")

    async def run(self, *, sleep: Sleep = asyncio.sleep) -> None:
        """Until cancelled: deliver, then look again every `idle_s`; after a failure wait a
        jittered back-off (up to `retry_max_wait_s`) and resume from the cursor."""
        failures = 0
        while True:
            try:
                await self.deliver_pending()
                failures = 0
                await sleep(self.idle_s)
            except UpstreamError as e:
                self._mark(False, str(e)[:200])
                failures += 1
                await sleep(random.uniform(0.5, 1.0) * min(self.settings.retry_max_wait_s, 0.5 * 2 ** failures))

    async def aclose(self) -> None:
        await self.client.aclose()


def _read_cursor(path: Path) -> int:
    try:
        seq = json.loads(path.read_text()).get("seq")
    except (OSError, ValueError, AttributeError):
        return 0
    return seq if isinstance(seq, int) and seq >= 0 else 0


def build_handback(section: WebhookSection, upstream: UpstreamSection, outbox: Outbox, state_dir: Path, *,
                   clock: Callable[[], datetime], credentials_dir: str | None = None) -> WebhookHandback:
    """Raises `ApiKeyError` for a secret the operator must fix."""
    secret = load_api_key(key_file=section.secret_file, credential=section.secret_credential,
                          credentials_dir=credentials_dir)
    assert upstream.frontelio is not None  # the config refuses a webhook without [upstream.frontelio]
    base_url = section.base_url or upstream.frontelio.base_url
    client = build_client(base_url, upstream.http)
    return WebhookHandback(client, f"/access/webhooks/{section.integration_id}", secret, outbox,
                           state_dir / CURSOR_FILE, upstream.http, idle_s=section.idle_s, clock=clock)
