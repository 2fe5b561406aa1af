"""The audit outbox: every decision and door event, durable before the door acts on it.

SQLite in WAL mode with `synchronous=FULL`: a row is on stable storage when `append` returns, so
a SIGKILL or power cut after the relay moved cannot lose the record of why. Each event carries a
UUID so replication is idempotent (at-least-once upstream, deduplicated centrally). Storage is
bounded: acknowledged events are pruned first; if only unsent events remain, the oldest are
dropped and an OUTBOX_OVERFLOW event records how many and which — never silently.

Kept in its own file (audit.db), apart from the grant cache, so a long bundle apply never holds
the write lock an audit append needs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    id: str
    at: str
    type: str
    body: dict[str, Any]
    acked: bool

    def as_wire(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "type": self.type, **self.body}


def _v1(db: sqlite_utils.Database) -> None:
    db["events"].create(
        {"seq": int, "id": str, "at": str, "type": str, "body": str, "acked": int},
        pk="seq", not_null={"id", "at", "type", "body", "acked"}, defaults={"acked": 0},
    )
    db["events"].create_index(["id"], unique=True)
    db["events"].create_index(["acked", "seq"])


_MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {1: _v1}


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Outbox:
    def __init__(self, path: str | Path, max_events: int = 500_000, clock: Callable[[], datetime] = _utc_now) -> None:
        self.path = str(path)
        self.max_events = max_events
        self._clock = clock
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._count = self.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        self._pending = self.conn.execute("SELECT count(*) FROM events WHERE acked = 0").fetchone()[0]

    def _migrate(self) -> None:
        current = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: outbox schema {current} is newer than this daemon ({SCHEMA_VERSION}); upgrade door-bridge")
        db = sqlite_utils.Database(self.conn)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                _MIGRATIONS[version](db)
                self.conn.execute(f"PRAGMA user_version={version}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # --- writing ------------------------------------------------------------------------------

    def append(self, type_: str, body: dict[str, Any], *, at: datetime | None = None) -> Event:
        """Commit one event (fsync'd) and return it. Thread-safe."""
        return self.append_many([(type_, body)], at=at)[0]

    def append_many(self, items: list[tuple[str, dict[str, Any]]], *, at: datetime | None = None) -> list[Event]:
        """Commit several events in ONE transaction (one fsync): all are durable, or none."""
        at_text = _iso(at or self._clock())
        rows = [(str(uuid.uuid4()), at_text, type_, json.dumps(body, separators=(",", ":"), default=str))
                for type_, body in items]
        events = []
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for (event_id, _, type_, text), (_, body) in zip(rows, items):
                    if self._count >= self.max_events:
                        self._make_room(at_text)
                    cur = self.conn.execute(
                        "INSERT INTO events(id, at, type, body, acked) VALUES (?,?,?,?,0)", (event_id, at_text, type_, text)
                    )
                    self._count += 1
                    self._pending += 1
                    events.append(Event(cur.lastrowid or 0, event_id, at_text, type_, body, False))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._count = self.conn.execute("SELECT count(*) FROM events").fetchone()[0]
                self._pending = self.conn.execute("SELECT count(*) FROM events WHERE acked = 0").fetchone()[0]
                raise
        return events

    def _make_room(self, at_text: str) -> None:
        """Inside the append transaction: free a tenth of the store, acknowledged events first."""
        room = max(1, self.max_events // 10)
        acked = self.conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE acked = 1 ORDER BY seq LIMIT ?)", (room,)
        ).rowcount
        self._count -= acked
        if acked >= room:
            return
        need = room - acked
        lost = self.conn.execute(
            "SELECT min(seq), max(seq), min(at), max(at), count(*) FROM "
            "(SELECT seq, at FROM events WHERE acked = 0 ORDER BY seq LIMIT ?)", (need,)
        ).fetchone()
        if lost[4]:
            self.conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE acked = 0 ORDER BY seq LIMIT ?)", (need,)
            )
            self._count -= lost[4]
            self._pending -= lost[4]
            overflow = {"dropped": lost[4], "firstSeq": lost[0], "lastSeq": lost[1], "oldestAt": lost[2],
                        "newestAt": lost[3], "maxEvents": self.max_events}
            self.conn.execute(
                "INSERT INTO events(id, at, type, body, acked) VALUES (?,?,?,?,0)",
                (str(uuid.uuid4()), at_text, "OUTBOX_OVERFLOW", json.dumps(overflow, separators=(",", ":"))),
            )
            self._count += 1
            self._pending += 1

    def ack(self, ids: list[str]) -> int:
        """Mark events the central confirmed it stored. Unknown ids are ignored (idempotent)."""
        if not ids:
            return 0
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            n = 0
            for chunk in range(0, len(ids), 500):
                part = ids[chunk:chunk + 500]
                n += self.conn.execute(
                    f"UPDATE events SET acked = 1 WHERE acked = 0 AND id IN ({','.join('?' * len(part))})", part
                ).rowcount
            self.conn.execute("COMMIT")
            self._pending -= n
        return n

    # --- reading ------------------------------------------------------------------------------

    # Reads take the lock too: on the one shared connection a SELECT during another thread's open
    # append transaction would see rows that are not committed yet (and might never be).

    def pending(self, limit: int = 500, after_seq: int = 0) -> list[Event]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT seq, id, at, type, body, acked FROM events WHERE acked = 0 AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [_event(r) for r in rows]

    def recent(self, limit: int = 20, after_seq: int = 0) -> list[Event]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT seq, id, at, type, body, acked FROM events WHERE seq > ? ORDER BY seq DESC LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [_event(r) for r in reversed(rows)]

    def after(self, after_seq: int = 0, limit: int = 500, *, since_at: str | None = None) -> list[Event]:
        """Events (acknowledged or not) with seq > `after_seq` — and, if given, `at >= since_at` —
        oldest first: for consumers with a cursor of their own (the webhook hand-back, an export)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT seq, id, at, type, body, acked FROM events WHERE seq > ? AND at >= ? ORDER BY seq LIMIT ?",
                (after_seq, since_at or "", limit),
            ).fetchall()
        return [_event(r) for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            row = self.conn.execute("SELECT max(seq) FROM events").fetchone()
        return row[0] or 0

    def depth(self) -> int:
        """Unsent events, kept in memory (exact: every write goes through this object)."""
        return self._pending

    def oldest_pending_at(self) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT at FROM events WHERE acked = 0 ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None

    def count(self) -> int:
        return self._count


def _event(row: tuple[Any, ...]) -> Event:
    return Event(row[0], row[1], row[2], row[3], json.loads(row[4]), bool(row[5]))


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
