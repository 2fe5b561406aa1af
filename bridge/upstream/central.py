"""The bridge protocol client: fetch signed grant bundles, post audit events (docs/bridge-protocol.md).

Only the wire lives here: statuses become `BundleFetch` / `IngestAnswer` or one of the upstream
errors. What to do with them (apply, ack, back off) is `bridge/central/sync.py` and `bridge/central/replicator.py`.
A bundle can be hundreds of megabytes, so it is streamed to a file, never into memory; every
other answer goes through `UpstreamHttp.request` like the other adapters.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from bridge.config.secret_files import ApiKey, load_api_key
from bridge.upstream.breaker import CircuitBreaker
from bridge.config.upstream import CentralSection, HttpSettings
from bridge.upstream.errors import UpstreamError, UpstreamProtocolError, UpstreamRejected, UpstreamUnavailable
from bridge.upstream.http import UpstreamHttp, build_client
from bridge.upstream.wire import parse_body

NAME = "central"
BUNDLE_MEDIA_TYPE = "application/x-door-bridge-bundle"
# Media types a bundle may come as; anything else (text/html from a captive portal, JSON from a
# wrong path) is refused before a byte is written.
_BUNDLE_TYPES = frozenset({BUNDLE_MEDIA_TYPE, "application/octet-stream"})
MAX_BATCH_EVENTS = 1000


class BatchTooLarge(UpstreamError):
    """413: the central takes fewer events (or bytes) per request than we sent. Send fewer."""


@dataclass(frozen=True, slots=True)
class BundleFetch:
    """`new`: a bundle body is at `path`; `not_modified`: 304; `gone`: 410, ask for a full bundle."""

    status: Literal["new", "not_modified", "gone"]
    etag: str | None = None
    path: Path | None = None
    size: int = 0
    # Of the whole download: recognises a bundle already refused when the central sends no ETag.
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class IngestAnswer:
    stored: tuple[str, ...]
    duplicates: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]  # (id, the central's error text)


class _Rejection(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=128)
    error: str = Field("", max_length=512)


class _IngestBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    stored: list[str]
    duplicates: list[str] = []
    rejected: list[_Rejection] = []


class _CommandEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")
    seq: int = Field(ge=0)
    token: str = Field(min_length=1, max_length=8192)


class _CommandsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    commands: list[_CommandEntry] = Field(max_length=1000)


@dataclass(frozen=True, slots=True)
class CommandEntry:
    """One signed command as the central lists it: `seq` is only its place in the list (unsigned,
    for paging); everything that matters is inside the signed `token` (verifier/commands.py)."""

    seq: int
    token: str


# A 200 body up to this size is read by the daemon even with a download child: one 64 KiB chunk
# (a delta of a few hundred records) holds the event loop's GIL about as long as a heartbeat.
IN_PROCESS_BODY_BYTES = 64 * 1024


class CentralHttp(UpstreamHttp):
    """`UpstreamHttp` plus a streamed download with the same breaker and error mapping."""

    def __init__(self, *args: Any, download_deadline_s: float = 900.0, download_in_child: HttpSettings | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.download_deadline_s = download_deadline_s
        # The client's settings when the download runs in a child (bridge/upstream/download_child.py).
        self.download_in_child = download_in_child

    async def download(
        self, path: str, *, params: Mapping[str, str], headers: Mapping[str, str], dest: Path, max_bytes: int
    ) -> tuple[int, httpx.Headers, int, str | None]:
        """GET into `dest` when the answer is 200: (status, headers, bytes written, sha256 hex).

        With a download child, the request is made here first: most polls are answered 304 (or
        an error, or a small delta), and a child for each cost an interpreter start and imports
        (0.4-0.5 s of CPU and a 46 MB process on the dev machine every poll_interval_s,
        bench/poll.py). Only a 200 whose body is big, or of undeclared length, is left unread;
        the child then asks again."""
        if self.download_in_child is None:
            return await self.download_here(path, params=params, headers=headers, dest=dest, max_bytes=max_bytes)
        try:
            return await self.download_here(path, params=params, headers=headers, dest=dest, max_bytes=max_bytes,
                                            in_process_max=IN_PROCESS_BODY_BYTES)
        except _BodyForChild:
            pass
        from bridge.upstream.download_child import download_in_child

        return await download_in_child(self.upstream, self.breaker, str(self.base_url), self.download_in_child,
                                       self.download_deadline_s, path, params=params, headers=headers, dest=dest,
                                       max_bytes=max_bytes)

    async def download_here(
        self, path: str, *, params: Mapping[str, str], headers: Mapping[str, str], dest: Path, max_bytes: int,
        in_process_max: int | None = None,
    ) -> tuple[int, httpx.Headers, int, str | None]:
        """`download` in this process, on this event loop. `in_process_max`: a 200 whose declared
        body is longer (or not declared) raises `_BodyForChild` unread, the breaker released."""
        self.breaker.before_call()
        what = f"GET {path}"
        try:
            async with asyncio.timeout(self.download_deadline_s):
                async with self.client.stream("GET", path, params=params, headers=headers) as response:
                    status = response.status_code
                    if status >= 500 or status == 429:
                        raise UpstreamUnavailable(self.upstream, f"{what}: HTTP {status}", status=status)
                    if status != 200:
                        result: tuple[int, httpx.Headers, int, str | None] = (status, response.headers, 0, None)
                    elif in_process_max is not None and not _declared_at_most(response, in_process_max):
                        raise _BodyForChild
                    else:
                        size, digest = await self._save(what, response, dest, max_bytes)
                        result = (status, response.headers, size, digest)
        except TimeoutError:
            self.breaker.record_failure()
            raise UpstreamUnavailable(self.upstream, f"{what}: not complete within the {self.download_deadline_s} s "
                                      "download deadline (a central trickling bytes, or a very slow link)") from None
        except UpstreamUnavailable:
            self.breaker.record_failure()
            raise
        except httpx.TransportError as e:
            self.breaker.record_failure()
            raise self._transport_error("GET", path, e) from None
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return result

    async def _save(self, what: str, response: httpx.Response, dest: Path, max_bytes: int) -> tuple[int, str]:
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type not in _BUNDLE_TYPES:
            raise UpstreamProtocolError(
                self.upstream, f"{what}: answered {media_type or 'no Content-Type'}, not {BUNDLE_MEDIA_TYPE} "
                "(check base_url; a proxy or captive portal may be answering)"
            )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise self._bundle_too_big(what, max_bytes)
        sha = hashlib.sha256()
        size = 0
        with open(dest, "wb") as out:
            async for chunk in response.aiter_bytes(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise self._bundle_too_big(what, max_bytes)
                sha.update(chunk)
                out.write(chunk)
        return size, sha.hexdigest()

    def _bundle_too_big(self, what: str, max_bytes: int) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            self.upstream,
            f"{what}: bundle over upstream.central.max_bundle_bytes ({max_bytes} bytes); raise it if the site is that big",
        )


class _BodyForChild(Exception):
    """A 200 whose body is the download child's to read (`CentralHttp.download`)."""


def _declared_at_most(response: httpx.Response, limit: int) -> bool:
    declared = response.headers.get("Content-Length", "")
    return declared.isdigit() and int(declared) <= limit


class CentralClient:
    name = NAME

    def __init__(self, http: CentralHttp, api_key: ApiKey, bridge_id: str, max_bundle_bytes: int) -> None:
        self.http = http
        self.bridge_id = bridge_id
        self.max_bundle_bytes = max_bundle_bytes
        self._api_key = api_key
        quoted = quote(bridge_id, safe="")
        self._bundle_path = f"/bridges/{quoted}/bundle"
        self._events_path = f"/bridges/{quoted}/events"
        self._commands_path = f"/bridges/{quoted}/commands"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.reveal()}"}

    async def fetch_bundle(self, since: int, etag: str | None, dest: Path) -> BundleFetch:
        """One attempt. `since` is the cache's version (0: empty); `etag` the last one we saw."""
        headers = {**self._auth(), "Accept": BUNDLE_MEDIA_TYPE}
        if etag:
            headers["If-None-Match"] = etag
        status, answer_headers, size, digest = await self.http.download(
            self._bundle_path, params={"since": str(since)}, headers=headers, dest=dest, max_bytes=self.max_bundle_bytes
        )
        new_etag = answer_headers.get("ETag")
        if status == 200:
            return BundleFetch("new", new_etag, dest, size, digest)
        if status == 304:
            return BundleFetch("not_modified", new_etag or etag)
        if status == 410:
            return BundleFetch("gone")
        raise _status_error(f"GET {self._bundle_path}", status, self.bridge_id)

    async def post_events(self, events: Sequence[Mapping[str, Any]]) -> IngestAnswer:
        """One attempt: the batch in order. Raises `BatchTooLarge` on 413."""
        answer = await self.http.request("POST", self._events_path, json_body={"events": list(events)}, headers=self._auth())
        what = f"POST {self._events_path}"
        if answer.status == 413:
            raise BatchTooLarge(NAME, f"{what}: HTTP 413 for {len(events)} events", status=413)
        if answer.status != 200:
            raise _status_error(what, answer.status, self.bridge_id)
        body = parse_body(NAME, what, _IngestBody, answer.body)
        return IngestAnswer(tuple(body.stored), tuple(body.duplicates), tuple((r.id, r.error) for r in body.rejected))

    async def get_commands(self, since: int) -> list[CommandEntry]:
        """One attempt: the signed commands listed after `since` (docs/bridge-protocol.md, Commands)."""
        answer = await self.http.request("GET", self._commands_path, params={"since": str(since)}, headers=self._auth())
        what = f"GET {self._commands_path}"
        if answer.status != 200:
            raise _status_error(what, answer.status, self.bridge_id)
        body = parse_body(NAME, what, _CommandsBody, answer.body)
        return [CommandEntry(c.seq, c.token) for c in body.commands]

    async def aclose(self) -> None:
        await self.http.aclose()


def _status_error(what: str, status: int, bridge_id: str) -> UpstreamError:
    hints = {
        401: "check that upstream.central.api_key_file / api_key_credential holds this bridge's current key",
        403: f"the key may not act for bridge {bridge_id!r}: check upstream.central.bridge_id and the key's scope",
        404: f"check upstream.central.base_url and that bridge {bridge_id!r} is registered at the central",
    }
    if status in hints:
        return UpstreamRejected(NAME, f"{what}: HTTP {status}", status=status, hint=hints[status])
    return UpstreamProtocolError(NAME, f"{what}: unexpected HTTP {status}", status=status)


def build_central(
    section: CentralSection,
    settings: HttpSettings,
    *,
    bridge_id: str,
    clock: Callable[[], float] = time.monotonic,
    credentials_dir: str | None = None,
) -> CentralClient:
    """Raises `ApiKeyError` for a key the operator must fix. `bridge_id` is used unless the
    section names its own."""
    key = load_api_key(key_file=section.api_key_file, credential=section.api_key_credential, credentials_dir=credentials_dir)
    breaker = CircuitBreaker(NAME, settings.breaker_failures, settings.breaker_cooldown_s, clock=clock)
    # apply_in = "process": the download runs in a child too, off the deciding process's GIL.
    http = CentralHttp(NAME, build_client(section.base_url, settings), breaker, settings.max_body_bytes,
                       settings.request_deadline_s, download_deadline_s=settings.download_deadline_s,
                       download_in_child=settings if section.apply_in == "process" else None)
    return CentralClient(http, key, section.bridge_id or bridge_id, section.max_bundle_bytes)
