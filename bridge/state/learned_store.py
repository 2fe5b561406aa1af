"""learned.db: the one owner of the learned offline cache's SQL.

Rows are addressed by an opaque look-up key (a keyed MAC of the credential and the reader, made by
bridge/state/learned.py) and carry a seal (a keyed MAC over every field that decides anything). This
class knows neither key: it stores bytes and hands rows back; checking the seal is the caller's.

`synchronous=FULL`: a forget (an online DENY) must survive a power cut, or a card the central
just refused would open again after the reboot. The LRU stamp (`used_ms`) is not sealed and is
only rewritten when it is more than a minute old, so an offline door does not write per scan.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from verifier.migrations import Step, migrate

if TYPE_CHECKING:  # the migration steps' type; verifier.migrations imports it only when a step is due
    import sqlite_utils

SCHEMA_VERSION = 1
TOUCH_EVERY_MS = 60_000


@dataclass(frozen=True, slots=True)
class StoredRow:
    lookup: bytes
    upstream: str
    reader_id: str
    credential_kind: str
    user_id: str | None
    user_name: str | None
    zone_name: str | None
    learned_ms: int
    expires_ms: int
    expires_reason: str
    starts_ms: int | None
    devices: tuple[str, ...] | None
    seal: bytes

    def sealed_fields(self) -> bytes:
        """The canonical bytes the seal covers (everything but the seal and the LRU stamp)."""
        return json.dumps([self.lookup.hex(), self.upstream, self.reader_id, self.credential_kind, self.user_id,
                           self.user_name, self.zone_name, self.learned_ms, self.expires_ms, self.expires_reason,
                           self.starts_ms, list(self.devices) if self.devices is not None else None],
                          separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class UpstreamSummary:
    entries: int
    oldest_learned_ms: int | None


_COLUMNS = ("lookup, upstream, reader_id, credential_kind, user_id, user_name, zone_name, learned_ms, "
            "expires_ms, expires_reason, starts_ms, devices, seal")

_SCHEMA = """
CREATE TABLE learned (
    lookup BLOB PRIMARY KEY,
    upstream TEXT NOT NULL,
    reader_id TEXT NOT NULL,
    credential_kind TEXT NOT NULL,
    user_id TEXT,
    user_name TEXT,
    zone_name TEXT,
    learned_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    expires_reason TEXT NOT NULL,
    starts_ms INTEGER,
    devices TEXT,
    used_ms INTEGER NOT NULL,
    seal BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX learned_used ON learned(used_ms);
"""


def _v1(db: sqlite_utils.Database) -> None:
    for stmt in (s for s in _SCHEMA.split(";") if s.strip()):
        db.conn.execute(stmt)


_MIGRATIONS: dict[int, Step] = {1: _v1}


class LearnedStore:
    def __init__(self, path: str | Path, max_entries: int) -> None:
        self.path = str(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        # Point look-ups only: a small page cache keeps memory flat in the number of entries.
        self.conn.execute("PRAGMA cache_size=-512")
        self._migrate()
        self._count = self.conn.execute("SELECT count(*) FROM learned").fetchone()[0]

    def _migrate(self) -> None:
        migrate(self.conn, _MIGRATIONS, lambda found, latest: RuntimeError(
            f"{self.path}: learned cache schema {found} is newer than this daemon ({latest}); upgrade door-bridge"))

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def count(self) -> int:
        return self._count

    # --- writing ------------------------------------------------------------------------------

    def put(self, row: StoredRow, now_ms: int) -> int:
        """Insert or replace one row; evict the least recently used beyond `max_entries`.
        Returns how many were evicted."""
        devices = json.dumps(list(row.devices)) if row.devices is not None else None
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                existed = self.conn.execute("SELECT 1 FROM learned WHERE lookup = ?", (row.lookup,)).fetchone()
                self.conn.execute(
                    f"INSERT OR REPLACE INTO learned ({_COLUMNS}, used_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (row.lookup, row.upstream, row.reader_id, row.credential_kind, row.user_id, row.user_name,
                     row.zone_name, row.learned_ms, row.expires_ms, row.expires_reason, row.starts_ms, devices,
                     row.seal, now_ms))
                count = self._count + (existed is None)
                evicted = 0
                if count > self.max_entries:
                    evicted = self.conn.execute(
                        "DELETE FROM learned WHERE lookup IN (SELECT lookup FROM learned WHERE lookup != ? "
                        "ORDER BY used_ms LIMIT ?)", (row.lookup, count - self.max_entries)).rowcount
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self._count = count - evicted
        return evicted

    def delete(self, lookups: list[bytes]) -> int:
        if not lookups:
            return 0
        with self._lock:
            n = self.conn.execute(f"DELETE FROM learned WHERE lookup IN ({','.join('?' * len(lookups))})",
                                  lookups).rowcount
            self._count -= n
        return n

    def touch(self, lookup: bytes, used_ms: int) -> None:
        with self._lock:
            self.conn.execute("UPDATE learned SET used_ms = ? WHERE lookup = ? AND used_ms < ?",
                              (used_ms, lookup, used_ms - TOUCH_EVERY_MS))

    def delete_expired_before(self, cutoff_ms: int) -> int:
        with self._lock:
            n = self.conn.execute("DELETE FROM learned WHERE expires_ms < ?", (cutoff_ms,)).rowcount
            self._count -= n
        return n

    # --- reading ------------------------------------------------------------------------------

    def get(self, lookup: bytes) -> StoredRow | None:
        with self._lock:
            row = self.conn.execute(f"SELECT {_COLUMNS} FROM learned WHERE lookup = ?", (lookup,)).fetchone()
        return _row(row) if row else None

    def rows(self, batch: int = 1000) -> Iterator[StoredRow]:
        """Every row, a page at a time (the start-up seal check runs in bounded memory)."""
        after = b""
        while True:
            with self._lock:
                page = self.conn.execute(f"SELECT {_COLUMNS} FROM learned WHERE lookup > ? ORDER BY lookup LIMIT ?",
                                         (after, batch)).fetchall()
            if not page:
                return
            for raw in page:
                yield _row(raw)
            after = page[-1][0] if isinstance(page[-1][0], bytes) else b"\xff" * 64

    def summary(self) -> dict[str, UpstreamSummary]:
        """Per upstream: entries and the oldest learned instant. Own read-only connection, so a
        status refresher never waits on the decision worker's writes."""
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as c:
            rows = c.execute("SELECT upstream, count(*), min(learned_ms) FROM learned GROUP BY upstream").fetchall()
        return {name: UpstreamSummary(n, oldest) for name, n, oldest in rows}


def _row(r: tuple[object, ...]) -> StoredRow:
    parsed = _row_or_none(r)
    return parsed if parsed is not None else _broken(r)


def _row_or_none(r: tuple[object, ...]) -> StoredRow | None:
    """A row as stored, or None when its columns are not even of the right types (a hand edit)."""
    try:
        lookup, upstream, reader_id, kind, user_id, user_name, zone_name, learned_ms, expires_ms, why, starts_ms, \
            devices, seal = r
        if not (isinstance(lookup, bytes) and isinstance(seal, bytes) and isinstance(upstream, str)
                and isinstance(reader_id, str) and isinstance(kind, str) and isinstance(why, str)
                and isinstance(learned_ms, int) and isinstance(expires_ms, int)
                and (starts_ms is None or isinstance(starts_ms, int))):
            return None
        device_list = None
        if devices is not None:
            loaded = json.loads(str(devices))
            if not (isinstance(loaded, list) and all(isinstance(d, str) for d in loaded)):
                return None
            device_list = tuple(loaded)
        for v in (user_id, user_name, zone_name):
            if v is not None and not isinstance(v, str):
                return None
        return StoredRow(lookup, upstream, reader_id, kind, user_id, user_name,  # type: ignore[arg-type]
                         zone_name, learned_ms, expires_ms, why, starts_ms, device_list, seal)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None


def _broken(r: tuple[object, ...]) -> StoredRow:
    """A row whose columns are unreadable: kept as an unsealable shell so the caller refuses it."""
    lookup = r[0] if isinstance(r[0], bytes) else str(r[0]).encode()
    return StoredRow(lookup, "?", "?", "?", None, None, None, 0, 0, "?", None, None, b"")
