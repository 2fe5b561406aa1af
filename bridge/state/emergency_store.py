"""emergency.db: what an emergency must not forget across a restart or a power cut.

The one owner of this file. Three things live here, each written (fsync'd, `synchronous=FULL`)
before the daemon acts on it:
- the precedence state (`Emergency.snapshot()`: lockdowns and manual overrides), so a door
  rebooted in lockdown comes back in lockdown;
- anti-passback presence (who is inside which area), so a restart forgives nobody;
- the nonces of signed commands taken, until their command expires, so a command replayed after a
  restart is still refused; and the cursor of the central's command list.

Written only from the decision worker thread (which owns the verifier whose state this is).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.antipassback import Presence, PresenceChange
from verifier.migrations import Step, migrate

if TYPE_CHECKING:  # the migration steps' type; verifier.migrations imports it only when a step is due
    import sqlite_utils


def _v1(db: "sqlite_utils.Database") -> None:
    # One statement per execute: executescript() would COMMIT the runner's transaction half-way.
    # IF NOT EXISTS: a file the first release created, cut before it set user_version, has them.
    db.conn.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
    db.conn.execute("CREATE TABLE IF NOT EXISTS presence (area TEXT NOT NULL, holder TEXT NOT NULL, inside INTEGER NOT NULL, "
                    "reader_id TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (area, holder))")
    db.conn.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL)")


_MIGRATIONS: dict[int, Step] = {1: _v1}
SCHEMA_VERSION = max(_MIGRATIONS)


class EmergencyStoreError(Exception):
    """emergency.db cannot be read or written: `str()` names the file, the cause and what to check."""


class EmergencyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            migrate(self.conn, _MIGRATIONS, lambda found, latest: EmergencyStoreError(
                f"{path}: schema {found} is newer than this daemon ({latest}); upgrade door-bridge"))
        except sqlite3.Error as e:
            raise EmergencyStoreError(f"{path}: cannot open: {e}; check owner, mode and free space of the state dir") from None

    def close(self) -> None:
        self.conn.close()

    # --- precedence state ---------------------------------------------------------------------

    def load(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT body FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def save(self, key: str, body: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO state(key, body) VALUES (?, ?)", (key, json.dumps(body, separators=(",", ":"))))

    # --- anti-passback presence ---------------------------------------------------------------

    def presence(self) -> list[Presence]:
        return [Presence(a, h, bool(i), r, t) for a, h, i, r, t in
                self.conn.execute("SELECT area, holder, inside, reader_id, at_ms FROM presence")]

    def apply_presence(self, changes: list[PresenceChange]) -> None:
        if not changes:
            return
        with self._transaction():
            for c in changes:
                if c.presence is None:
                    self.conn.execute("DELETE FROM presence WHERE area = ? AND holder = ?", (c.area, c.holder))
                else:
                    p = c.presence
                    self.conn.execute("INSERT OR REPLACE INTO presence VALUES (?,?,?,?,?)",
                                      (p.area, p.holder, int(p.inside), p.reader_id, p.at_ms))

    # --- command nonces -----------------------------------------------------------------------

    def nonce_seen(self, nonce: str) -> bool:
        return self.conn.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone() is not None

    def take_nonce(self, nonce: str, expires_ms: int, now_ms: int) -> None:
        """Remember a nonce until its command expires (and forget the ones whose command has)."""
        with self._transaction():
            self.conn.execute("DELETE FROM nonces WHERE expires_ms < ?", (now_ms,))
            self.conn.execute("INSERT OR REPLACE INTO nonces VALUES (?, ?)", (nonce, expires_ms))

    # --- writing ------------------------------------------------------------------------------

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._transaction():
            self.conn.execute(sql, args)

    def _transaction(self) -> "_Tx":
        return _Tx(self)


class _Tx:
    def __init__(self, store: EmergencyStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        try:
            self.store.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise EmergencyStoreError(f"{self.store.path}: write failed: {e}; check free space and the SD card "
                                      "(df -h, dmesg)") from None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        conn = self.store.conn
        if kind is None:
            try:
                conn.execute("COMMIT")
                return
            except sqlite3.Error as e:
                error = e
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            raise EmergencyStoreError(f"{self.store.path}: write failed: {error}; check free space and the SD card "
                                      "(df -h, dmesg)") from None
