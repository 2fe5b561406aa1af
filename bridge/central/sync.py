"""Bundle sync: poll the central for newer signed grant bundles and apply them off the scan path.

Each poll asks for `since=<cache version>` with the last `ETag`; a 200 body is streamed to a file
in the state dir (memory stays flat, size capped), checked, then applied by a CHILD PROCESS with
its own SQLite connection (`apply_in = "process"`). Why a process: applying is CPU-bound Python
(JSON per record); in a thread it holds the GIL and decisions queue behind it for the whole
apply, in a process they only share the disk. bench/sync.py measures both; the figures are in
docs/bridge-protocol.md. The cache is WAL, so decisions keep reading the previous version until
the apply commits, then `PRAGMA data_version` tells their `GrantCache` to look again.

A refused bundle (bad signature, rollback, tampered body) changes nothing, is logged once with
what to check, and is not fetched again until the central offers something else: its ETag goes
back as `If-None-Match`, and its digest is remembered for a central that sends no ETag.

Run as `python -m bridge.central.sync apply CACHE BUNDLE PUBLIC_KEY` it is the child that applies.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sqlite3
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.config.upstream import CentralSection, HttpSettings
from bridge.state import bundle_floor
from bridge.upstream.background import BACKGROUND_NICENESS, background_argv
from bridge.upstream.central import BundleFetch, CentralClient
from bridge.upstream.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from bridge.upstream.retry import call_with_retry
from verifier import schema
from verifier.bundle import (
    MAX_MANIFEST_BYTES,
    BundleRejected,
    Manifest,
    apply_file,
    check_audience,
    load_public_key,
    public_key_text,
    read_manifest,
    read_meta,
)
from verifier.timeutil import iso_seconds

log = structlog.get_logger()

DOWNLOAD_NAME = "bundle.download"
APPLIER_NICENESS = BACKGROUND_NICENESS
SyncOutcome = Literal["applied", "not_modified", "rejected", "already_rejected", "failed"]
Sleep = Callable[[float], Awaitable[Any]]


@dataclass
class SyncState:
    """For `door-bridge status`. Times are the injected clock's."""

    version: int = 0
    etag: str | None = None
    last_attempt_at: datetime | None = None
    last_sync_at: datetime | None = None  # the central last answered (applied, 304 or refused)
    last_applied_at: datetime | None = None
    last_apply_s: float | None = None
    # Peak RSS of the process that applied (the child in "process" mode): sizing a Pi's memory.
    last_apply_peak_rss_mb: float | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    applying: bool = False

    def as_status(self) -> dict[str, Any]:
        t = iso_seconds
        return {"version": self.version, "last_attempt_at": t(self.last_attempt_at), "last_sync_at": t(self.last_sync_at),
                "last_applied_at": t(self.last_applied_at), "last_apply_s": self.last_apply_s,
                "last_apply_peak_rss_mb": self.last_apply_peak_rss_mb,
                "last_error": self.last_error, "last_error_at": t(self.last_error_at), "applying": self.applying}


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    kind: str
    records: int
    apply_s: float
    # ru_maxrss of the process that applied: the child in "process" mode, the daemon in "thread" mode.
    peak_rss_kb: int


class BundleSync:
    def __init__(
        self,
        client: CentralClient,
        section: CentralSection,
        settings: HttpSettings,
        *,
        state_dir: Path,
        public_key: Ed25519PublicKey,
        clock: Callable[[], datetime],
        cache_path: Path | None = None,
        audience: tuple[str, ...] = (),
    ) -> None:
        self.client = client
        self.section = section
        self.settings = settings
        self.clock = clock
        self.public_key = public_key
        self.audience = audience  # the bridge ids a bundle's signed audience must name
        self.cache_path = cache_path or Path(state_dir) / "grants.db"
        self.download_path = Path(state_dir) / DOWNLOAD_NAME
        with suppress(FileNotFoundError):
            self.download_path.unlink()  # a download cut short by a crash or restart
        self._conn: sqlite3.Connection | None = None
        self._conn_identity: schema.FileIdentity = None
        self._refused: tuple[str | None, str | None] | None = None  # (etag, sha256) of the last refused bundle
        self.state = SyncState(version=self.cache_version())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def cache_version(self) -> int:
        if self._conn is not None and schema.file_identity(str(self.cache_path)) != self._conn_identity:
            # grants.db was replaced or deleted: ask for what the file the applier writes holds.
            log.warning("grants_db_replaced", file=str(self.cache_path),
                        check="something outside door-bridge replaced or deleted the cache; a full bundle is fetched")
            self.close()
        if self._conn is None:
            self._conn = schema.connect(str(self.cache_path))
            schema.migrate(self._conn)
            self._conn_identity = schema.file_identity(str(self.cache_path))
        return int(read_meta(self._conn).get("version", "0"))

    # --- one poll --------------------------------------------------------------------------------

    async def sync_once(self, *, sleep: Sleep | None = None) -> SyncOutcome:
        """Fetch (retrying transient failures) and apply. Raises `UpstreamError` when it gives up."""
        self.state.last_attempt_at = self.clock()
        since = self.cache_version()
        self.state.version = since
        try:
            fetch = await self._fetch(since, self.state.etag, sleep)
            if fetch.status == "gone":  # the central cannot make a delta from our version
                log.info("bundle_delta_gone", since=since)
                fetch = await self._fetch(0, None, sleep)
                if fetch.status != "new":
                    raise UpstreamProtocolError(self.client.name, f"asked for a full bundle, got {fetch.status}")
            self.state.last_sync_at = self.clock()
            if fetch.status == "not_modified":
                self.state.etag = fetch.etag
                return "not_modified"
            self.state.etag = fetch.etag
            if self._refused is not None and (
                (fetch.etag is not None and fetch.etag == self._refused[0]) or fetch.sha256 == self._refused[1]
            ):
                log.debug("bundle_already_rejected", etag=fetch.etag)
                return "already_rejected"
            manifest = self._check(fetch, since)
            if manifest is None:
                return "rejected"
            if manifest.kind == "delta" and manifest.base_version != since:
                # The central answered a delta for another base: ask once for a full bundle.
                log.warning("bundle_delta_mismatch", since=since, base_version=manifest.base_version)
                fetch = await self._fetch(0, None, sleep)
                if fetch.status != "new":
                    raise UpstreamProtocolError(self.client.name, f"asked for a full bundle, got {fetch.status}")
                self.state.etag = fetch.etag
                if (manifest := self._check(fetch, since)) is None:
                    return "rejected"
            return await self._apply(fetch, manifest)
        finally:
            with suppress(FileNotFoundError):
                self.download_path.unlink()

    async def _fetch(self, since: int, etag: str | None, sleep: Sleep | None) -> BundleFetch:
        return await call_with_retry(
            self.settings, lambda: self.client.fetch_bundle(since, etag, self.download_path), sleep=sleep
        )

    def _check(self, fetch: BundleFetch, since: int) -> Manifest | None:
        """Verify the manifest before paying for an apply, so the log can say what to check."""
        with open(self.download_path, "rb") as f:
            first = f.readline(MAX_MANIFEST_BYTES + 1)
        if not first.strip():
            raise UpstreamProtocolError(self.client.name, "HTTP 200 with an empty bundle body")
        try:
            manifest = read_manifest(first.strip(), self.public_key)
        except BundleRejected as e:
            self._refuse(fetch, e, check="that cache.public_key is this central's bundle signing key, "
                                         "and that upstream.central.base_url is the right central")
            return None
        if manifest.version <= since:
            self._refuse(fetch, BundleRejected(f"bundle version {manifest.version} is not newer than the cache's {since}"),
                         check="the central's bundle version counter (restored from a backup?); the cache keeps "
                               f"version {since}", version=manifest.version)
            return None
        try:
            check_audience(manifest, self.audience)
        except BundleRejected as e:
            self._refuse(fetch, e, check="the central addressed this bundle to another bridge: is bridge.id right, "
                                         "and is upstream.central.base_url this bridge's central?", version=manifest.version)
            return None
        return manifest

    async def _apply(self, fetch: BundleFetch, manifest: Manifest) -> SyncOutcome:
        self.state.applying = True
        try:
            if self.section.apply_in == "process":
                applied = await apply_in_process(self.cache_path, self.download_path, self.public_key, self.audience)
            else:
                applied = await asyncio.to_thread(apply_here, self.cache_path, self.download_path, self.public_key,
                                                  self.audience)
        except BundleRejected as e:
            self._refuse(fetch, e, check="the body differs from what the central signed: a proxy altering downloads, "
                                         "or the central's bundle builder; the cache keeps its version",
                         version=manifest.version)
            return "rejected"
        except (RuntimeError, OSError, sqlite3.Error) as e:
            # Our side failed (disk full, permissions, applier crashed): fetch it again next poll.
            self.state.etag = None
            self.state.last_error, self.state.last_error_at = f"bundle apply failed: {e}", self.clock()
            log.error("bundle_apply_failed", version=manifest.version, error=f"{type(e).__name__}: {e}"[:300],
                      check=f"free space and permissions in {self.cache_path.parent}")
            return "failed"
        finally:
            self.state.applying = False
        self._refused = None
        now = self.clock()
        self.state.version, self.state.last_applied_at, self.state.last_apply_s = applied.version, now, applied.apply_s
        self.state.last_apply_peak_rss_mb = round(applied.peak_rss_kb / 1024, 1)
        log.info("bundle_applied", version=applied.version, kind=applied.kind, records=applied.records,
                 apply_s=round(applied.apply_s, 2), bytes=fetch.size, applied_in=self.section.apply_in)
        return "applied"

    def _refuse(self, fetch: BundleFetch, error: BundleRejected, *, check: str, version: int | None = None) -> None:
        self._refused = (fetch.etag, fetch.sha256)
        self.state.last_error, self.state.last_error_at = f"bundle rejected: {error}", self.clock()
        log.error("bundle_rejected", version=version, cache_version=self.state.version, error=str(error), check=check)

    # --- the loop --------------------------------------------------------------------------------

    def next_wait_s(self) -> float:
        jitter = self.section.poll_jitter
        return self.section.poll_interval_s * random.uniform(1 - jitter, 1 + jitter)

    async def run(self, *, sleep: Sleep = asyncio.sleep) -> None:
        """Until cancelled: poll, apply, wait. Upstream failures are logged once per change."""
        failing: str | None = None
        while True:
            try:
                outcome = await self.sync_once(sleep=sleep)
            except (UpstreamError, OSError) as e:
                text = str(e) if isinstance(e, UpstreamError) else f"cannot write {self.download_path}: {e.strerror}"
                self.state.etag = None if isinstance(e, OSError) else self.state.etag
                self.state.last_error, self.state.last_error_at = text, self.clock()
                if text != failing:
                    level = log.warning if isinstance(e, UpstreamUnavailable) else log.error
                    level("bundle_sync_failed", error=text, cache_version=self.state.version)
                    failing = text
            else:
                if failing is not None:
                    log.info("bundle_sync_ok", outcome=outcome, cache_version=self.state.version)
                    failing = None
                if outcome in ("applied", "not_modified"):
                    self.state.last_error = None
            await sleep(self.next_wait_s())


async def run_sync(sync: BundleSync, *, sleep: Sleep = asyncio.sleep) -> None:
    """The daemon's task: `asyncio.create_task(run_sync(sync))`; cancel it to stop."""
    try:
        await sync.run(sleep=sleep)
    finally:
        sync.close()


# --- applying --------------------------------------------------------------------------------------


# The applier's page cache: a full bundle updates indexes keyed by card numbers and user ids all
# over the file; with SQLite's default 2 MiB most index pages are written out and read back
# several times. 32 MiB, bounded: a 1M-grant apply here took 33.5 / 40.8 s instead of 45.7 / 46.2 s
# (load 7-8), CPU 20.2 / 19.0 s instead of 21.3 / 22.1 s, peak RSS 74 MB instead of 59 MB.
APPLY_CACHE_KIB = 32 * 1024


def apply_connection(cache_path: Path) -> sqlite3.Connection:
    """The applier's own connection (never the decision connection), with its larger page cache."""
    conn = schema.connect(str(cache_path))
    conn.execute(f"PRAGMA cache_size=-{APPLY_CACHE_KIB}")
    return conn


def apply_here(cache_path: Path, bundle_path: Path, public_key: Ed25519PublicKey,
               audience: tuple[str, ...] = ()) -> Applied:
    """Apply on a connection of our own (never the decision connection), then shrink the WAL."""
    started = time.perf_counter()
    conn = apply_connection(cache_path)
    try:
        schema.migrate(conn)
        state_dir = cache_path.parent
        result = apply_file(conn, bundle_path, public_key, bundle_floor.load(state_dir, public_key), audience=audience)
        bundle_floor.record(state_dir, public_key, result)
        # A million-grant apply leaves a WAL of hundreds of MB: give the SD card its space back.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Applied(result.version, result.kind, result.records, time.perf_counter() - started, rss_kb)


async def apply_in_process(cache_path: Path, bundle_path: Path, public_key: Ed25519PublicKey,
                           audience: tuple[str, ...] = ()) -> Applied:
    """Run `apply_here` in `python -m bridge.central.sync apply …`. Cancelling kills the child: WAL
    discards its uncommitted transaction, so the cache stays at the previous version."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = await asyncio.create_subprocess_exec(
        *background_argv("bridge.central.sync", "apply", str(cache_path), str(bundle_path), public_key_text(public_key), *audience),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        with suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    try:
        answer = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"bundle applier exited {proc.returncode}: {tail[0][:300]}") from None
    if "rejected" in answer:
        raise BundleRejected(answer["rejected"])
    return Applied(answer["version"], answer["kind"], answer["records"], answer["apply_s"], answer["peak_rss_kb"])


def _child_main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "apply":
        print("usage: python -m bridge.central.sync apply CACHE_DB BUNDLE PUBLIC_KEY", file=sys.stderr)
        return 2
    # Background work: on a busy CPU the decision thread of the daemon goes first. Started by
    # apply_in_process it is niced already, imports included (background_argv); run by hand, here.
    with suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, max(APPLIER_NICENESS, os.getpriority(os.PRIO_PROCESS, 0)))
    try:
        applied = apply_here(Path(argv[1]), Path(argv[2]), load_public_key(argv[3]), tuple(argv[4:]))
    except BundleRejected as e:
        print(json.dumps({"rejected": str(e)}))
        return 3
    print(json.dumps({"version": applied.version, "kind": applied.kind, "records": applied.records,
                      "apply_s": applied.apply_s, "peak_rss_kb": applied.peak_rss_kb}))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
