"""The learned offline cache: GRANTs the central gave, remembered so the door can act on them offline.

Frontelio and SNA ship no signed bundles, so without this a site on either is shut the moment the
WAN drops. Here every online answer passes through `observe` (one call, in the daemon's decision
worker): a GRANT is remembered with what the answer and the credential say about its lifetime
(verifier/learned.py has the rules), a DENY of any reason forgets the credential at once. The
verifier asks `recall` only when its signed cache has no verdict of its own.

Secrets: nothing here stores, logs or raises a credential. A row is addressed by
HMAC-SHA256(lookup key, kind ‖ credential ‖ reader) and sealed by HMAC-SHA256(seal key, every
field that decides anything), both keys derived from one per-bridge secret (`learned.key` in the
state dir, 0600, or a systemd credential). An SD-card edit that adds, extends or re-points a row
breaks its seal: the row is refused, deleted, logged and audited, and the door decides as if it
had never been learned. (Whoever can read the key file can forge rows; docs/upstreams.md says how
to keep the key off the card with an encrypted systemd credential.)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import jwt
import structlog

from bridge.state.learned_store import LearnedStore, StoredRow, UpstreamSummary
from bridge.config.offline import OfflineSection, UpstreamOffline
from verifier.learned import LearnedEntry, Lifetime, Recalled, expiry, jwt_expiry_ms, recall
from verifier.timeutil import to_ms
from verifier.types import AccessDecision, CardNumber, Credential, CredentialJwt, Reason, secret_of

log = structlog.get_logger()

KEY_FILE = "learned.key"
DB_FILE = "learned.db"
KEY_BYTES = 32
# Expired rows are kept a day so a late presentation is told *why* (CREDENTIAL_EXPIRED, …) rather
# than NO_GRANT; after that the start-up sweep drops them.
KEEP_EXPIRED_MS = 24 * 3600 * 1000


class LearnedKeyError(Exception):
    """The per-bridge secret cannot be read or made; the message names the path, never the key."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row whose seal does not hold: safe to audit (the reader and upstream, no credential)."""

    upstream: str
    reader_id: str
    why: str


@dataclass(frozen=True, slots=True)
class SweepResult:
    kept: int
    expired: int
    refused: int


class LearnedCache:
    def __init__(self, state_dir: Path, section: OfflineSection, *, secret: bytes,
                 identities: dict[str, frozenset[str]] | None = None,
                 on_refused: Callable[[Refusal], None] | None = None) -> None:
        self.section = section
        self._lookup_key = hmac.new(secret, b"door-bridge learned lookup v1", hashlib.sha256).digest()
        self._seal_key = hmac.new(secret, b"door-bridge learned seal v1", hashlib.sha256).digest()
        self._identities = identities or {}
        self._on_refused = on_refused
        self.store = LearnedStore(state_dir / DB_FILE, section.max_entries)
        self.refused = 0
        self.evicted = 0

    def close(self) -> None:
        self.store.close()

    # --- the online path ----------------------------------------------------------------------

    def observe(self, upstream: str, credential: Credential, decision: AccessDecision, readers: list[str],
                now: datetime) -> None:
        """Every online answer, once: a GRANT is learned at its reader, a DENY forgets the
        credential at every reader of this bridge (the central said no; nothing of it may open)."""
        if not decision.online:
            return
        if not decision.granted:
            self.forget(credential, readers)
            return
        settings = self.section.for_upstream(upstream)
        if not settings.learn:
            return
        life = _lifetime(upstream, credential, decision, settings, to_ms(now))
        if life is None:
            return
        limit = expiry(life)
        if limit.at_ms <= life.learned_ms:
            self.forget(credential, [decision.reader_id])
            return
        devices = decision.terms.devices if decision.terms is not None else None
        row = StoredRow(self._lookup(credential, decision.reader_id), upstream, decision.reader_id, credential.kind,
                        decision.user_id, decision.user_name, decision.zone_name, life.learned_ms, limit.at_ms,
                        limit.reason.value, life.window_starts_ms, devices, b"")
        evicted = self.store.put(_sealed(row, self._seal_key), life.learned_ms)
        if evicted:
            self.evicted += evicted
            log.info("learned_evicted", count=evicted, max_entries=self.section.max_entries,
                     check="raise offline.max_entries if regular holders are being forgotten")

    def forget(self, credential: Credential, readers: list[str]) -> int:
        return self.store.delete([self._lookup(credential, r) for r in dict.fromkeys(readers)])

    # --- the offline path (the verifier's hook) -----------------------------------------------

    def recall(self, credential: Credential, reader_id: str, now: datetime) -> Recalled | None:
        """What the central said about this credential at this reader, if anything still holds."""
        if not isinstance(credential, (CardNumber, CredentialJwt)):
            return None
        lookup = self._lookup(credential, reader_id)
        try:
            row = self.store.get(lookup)
        except sqlite3.Error as e:
            log.error("learned_read_failed", reader=reader_id, error=f"{type(e).__name__}: {e}"[:200],
                      effect="decided as if nothing was learned", check="learned.db in the state dir; door-bridge doctor")
            return None
        if row is None:
            return None
        entry = self._open(row)
        if entry is None:
            return None
        settings = self.section.for_upstream(entry.upstream)
        if not settings.learn:
            return None
        now_ms = to_ms(now)
        with contextlib.suppress(sqlite3.Error):  # the LRU stamp is a hint; a failed write changes no decision
            self.store.touch(lookup, now_ms)
        return recall(entry, now_ms, self._identities.get(entry.upstream, frozenset()), int(settings.max_age_s * 1000))

    def sweep(self, now: datetime) -> SweepResult:
        """At start-up: check every seal (refusing what an edit broke) and drop rows long expired."""
        now_ms = to_ms(now)
        broken = [row for row in self.store.rows() if self._open(row, delete=False) is None]
        for row in broken:
            self._refuse(row, "seal does not match")
        expired = self.store.delete_expired_before(now_ms - KEEP_EXPIRED_MS)
        return SweepResult(self.store.count(), expired, len(broken))

    def summary(self) -> dict[str, UpstreamSummary]:
        return self.store.summary()

    # --- sealing ------------------------------------------------------------------------------

    def _lookup(self, credential: Credential, reader_id: str) -> bytes:
        material = b"\0".join([credential.kind.encode(), secret_of(credential).encode(), reader_id.encode()])
        return hmac.new(self._lookup_key, material, hashlib.sha256).digest()

    def _open(self, row: StoredRow, *, delete: bool = True) -> LearnedEntry | None:
        expected = hmac.new(self._seal_key, row.sealed_fields(), hashlib.sha256).digest()
        try:
            reason = Reason(row.expires_reason)
        except ValueError:
            reason = None
        if not hmac.compare_digest(expected, row.seal) or reason is None:
            if delete:
                self._refuse(row, "seal does not match")
            return None
        return LearnedEntry(row.upstream, row.reader_id, row.credential_kind, row.user_id, row.user_name,
                            row.zone_name, row.learned_ms, row.expires_ms, reason, row.starts_ms, row.devices)

    def _refuse(self, row: StoredRow, why: str) -> None:
        self.store.delete([row.lookup])
        self.refused += 1
        refusal = Refusal(row.upstream[:32], row.reader_id[:128], why)
        log.error("learned_entry_refused", upstream=refusal.upstream, reader=refusal.reader_id, why=why,
                  effect="ignored and deleted; the door decides as if it had never been learned",
                  check="someone edited learned.db, or learned.key changed; look at who had the SD card")
        if self._on_refused is not None:
            self._on_refused(refusal)


def _sealed(row: StoredRow, key: bytes) -> StoredRow:
    from dataclasses import replace

    return replace(row, seal=hmac.new(key, row.sealed_fields(), hashlib.sha256).digest())


def _lifetime(upstream: str, credential: Credential, decision: AccessDecision, settings: UpstreamOffline,
              now_ms: int) -> Lifetime | None:
    """What limits this GRANT; None for answers that must never be replayed."""
    max_age_ms = int(settings.max_age_s * 1000)
    ttl_ms = int(settings.card_ttl_s * 1000) if settings.card_ttl_s is not None else None
    terms = decision.terms
    if upstream == "frontelio" and isinstance(credential, CredentialJwt):
        # Frontelio approved exactly these bytes; their exp/validUntil is what the phone's
        # credential claims about itself. No signature check here: the look-up key is a MAC of
        # these exact bytes, so no other token can ever match this row.
        try:
            claims = jwt.decode(credential.token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None
        own = jwt_expiry_ms(claims)
        return Lifetime(now_ms, max_age_ms, credential_expires_ms=own, ttl_ms=ttl_ms if own is None else None)
    if upstream == "frontelio" and isinstance(credential, CardNumber):
        return Lifetime(now_ms, max_age_ms, ttl_ms=ttl_ms)
    if upstream == "sna" and isinstance(credential, CardNumber):
        ends = terms.ends_ms if terms is not None else None
        return Lifetime(now_ms, max_age_ms, window_starts_ms=terms.starts_ms if terms is not None else None,
                        window_ends_ms=ends, ttl_ms=ttl_ms if ends is None else None)
    return None  # Digital ID (5-minute tokens, "needs connectivity") and anything unknown


def load_secret(state_dir: Path, section: OfflineSection, credentials_dir: str | None = None) -> bytes:
    """The per-bridge secret: from `key_credential`, `key_file`, or `learned.key` in the state dir
    (made on first start, 0600 whatever the umask)."""
    from bridge.config.secret_files import ApiKeyError, load_api_key

    path = section.key_file or state_dir / KEY_FILE
    if section.key_credential is None and section.key_file is None and not path.exists():
        _create_key(path)
    try:
        text = load_api_key(key_file=None if section.key_credential else path, credential=section.key_credential,
                            credentials_dir=credentials_dir).reveal()
    except ApiKeyError as e:
        raise LearnedKeyError(str(e).replace("API key", "learned-cache key")) from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    if len(secret) < 16:
        raise LearnedKeyError(f"{section.key_credential or path}: the learned-cache key must be at least 16 bytes "
                              f"(make one: head -c32 /dev/urandom | xxd -p -c64)")
    return secret


def _create_key(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise LearnedKeyError(f"{path}: cannot create the learned-cache key: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added: make it exact
        os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
