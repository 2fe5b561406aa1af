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

import contextlib
import json
import os
import sqlite3
import zlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import structlog

from verifier.migrations import migrate
from verifier.timeutil import iso

if TYPE_CHECKING:  # the migration steps' type; verifier.migrations imports it only when a step is due
    import sqlite_utils

log = structlog.get_logger()

SCHEMA_VERSION = 1

# What an event is worth when room must be made (higher is kept longer). A flood of junk at a
# reader must never push out the record of who opened the door or of an alarm.
JUNK = 0  # VERIFY rows of malformed scans, rate-limited scans and replays
ROUTINE = 1  # every other VERIFY DENY
EVIDENCE = 2  # VERIFY GRANTs, door events, alerts, overflow and loss records, everything else
_JUNK_REASONS = ("MALFORMED_CREDENTIAL", "RATE_LIMITED")
_VALUE_SQL = (
    "CASE WHEN type != 'VERIFY' THEN 2 "
    "WHEN json_extract(body, '$.decision') = 'GRANT' THEN 2 "
    "WHEN json_extract(body, '$.replay') = 1 OR json_extract(body, '$.reason') IN ('MALFORMED_CREDENTIAL', 'RATE_LIMITED') THEN 0 "
    "ELSE 1 END"
)
_EVICTION_POLICY = ("least valuable first: junk (malformed, rate-limited, replays), then other denials, "
                    "then evidence (grants, door events, alerts), oldest first; junk never evicts anything worth more")
# Alarm events that replicate ahead of the backlog (docs/bridge-protocol.md): a duress code or a
# fire alarm must reach the central now, not after a week of offline decisions.
URGENT_TYPES = ("DURESS", "FIRE_ALARM", "TAMPER", "POWER_FAULT", "LOCKDOWN")
_URGENT_SQL = f"type IN ({', '.join(repr(t) for t in URGENT_TYPES)})"
_LOST_CAUSE = "audit.db ends before the sequence the bridge recorded as committed (a damaged WAL, or the file replaced or quarantined)"


def value_of(type_: str, body: dict[str, Any]) -> int:
    """The same rule as `_VALUE_SQL`, for an event not yet written."""
    if type_ != "VERIFY" or body.get("decision") == "GRANT":
        return EVIDENCE
    if body.get("replay") is True or body.get("reason") in _JUNK_REASONS:
        return JUNK
    return ROUTINE


@dataclass(frozen=True, slots=True)
class LostEvents:
    first_seq: int
    last_seq: int

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


class HighWaterMark:
    """The highest committed audit sequence, in a small file beside audit.db (not inside it).

    SQLite trusts its WAL up to the first frame whose checksum fails and silently ignores the
    rest, committed transactions included; `integrity_check` then passes. This mark is written
    after every commit (fdatasync'd at most once a second), so at the next start a database that ends below it has
    lost rows, and the outbox says so (AUDIT_EVENTS_LOST) instead of carrying on. One fixed-size
    record rewritten in place, with a CRC so a damaged mark is recognised, not believed.
    """

    SUFFIX = ".hwm"
    SYNC_EVERY_S = 1.0  # fdatasync at most once a second: not one more fsync on every scan's path
    _WIDTH = 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        self.value = self._read()
        self._failed = False
        self._dirty = False
        self._synced_at = 0.0

    def _read(self) -> int:
        raw = os.pread(self._fd, 64, 0)
        if not raw:
            return 0
        try:
            number, crc = raw.decode("ascii").split()
            if int(crc, 16) == zlib.crc32(number.encode()):
                return int(number)
        except ValueError:
            pass
        log.warning("audit_mark_unreadable", file=str(self.path),
                    check="the mark is rebuilt from audit.db; losses before this start cannot be detected")
        return 0

    def advance(self, seq: int) -> None:
        """Record `seq` (a page-cache write: microseconds, so the relay does not wait for it);
        `sync` makes it durable. A process kill loses nothing written here; a power cut may
        lose up to SYNC_EVERY_S of the mark, so a loss of the last second's rows in that same
        power cut could go unseen."""
        if seq <= self.value:
            return
        number = str(seq).rjust(self._WIDTH, "0")
        record = f"{number} {zlib.crc32(number.encode()):08x}\n".encode("ascii")
        try:
            os.pwrite(self._fd, record, 0)
        except OSError as e:  # the rows are committed; only the loss detection is weaker
            self._write_failed(e)
            return
        self.value = seq
        self._dirty = True
        if time.monotonic() - self._synced_at >= self.SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        if not self._dirty:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            self._write_failed(e)
            return
        self._dirty, self._failed, self._synced_at = False, False, time.monotonic()

    def _write_failed(self, e: OSError) -> None:
        if not self._failed:
            log.error("audit_mark_write_failed", file=str(self.path), error=str(e),
                      check="free space and SD card health; lost audit rows may go undetected until fixed")
        self._failed = True

    def close(self) -> None:
        self.sync()
        with contextlib.suppress(OSError):
            os.close(self._fd)


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


class OutboxWriteError(Exception):
    """An append or ack did not commit. `str()` names the file, SQLite's own cause (e.g.
    SQLITE_FULL) and what to check; the caller must not act on rows that are not on disk."""

    def __init__(self, path: str, error: sqlite3.Error) -> None:
        code = getattr(error, "sqlite_errorname", None) or type(error).__name__
        directory = str(Path(path).parent)
        hint = _WRITE_HINTS.get(code, f"`door-bridge doctor`; dmesg for I/O errors; `ls -l {directory}`")
        super().__init__(f"{path}: audit write failed: {error} ({code}); check: {hint.format(dir=directory)}")
        self.code = code


_WRITE_HINTS = {
    "SQLITE_FULL": "free space on the state dir's filesystem (`df -h {dir}`; old files in /var/log, journalctl --vacuum-size)",
    "SQLITE_READONLY": "owner and mode of audit.db and its directory (`ls -l {dir}`), a filesystem mounted read-only (`mount`)",
    "SQLITE_IOERR": "SD card / disk health (`dmesg`, `vcgencmd get_throttled`)",
    "SQLITE_CANTOPEN": "the state dir exists and is writable by the service user (`ls -ld {dir}`)",
    "SQLITE_BUSY": "another process holding audit.db open for writing (`fuser {dir}/audit.db`)",
}


def _is_storage_error(e: BaseException) -> bool:
    """The disk or the file failed (full, read-only, I/O), not the caller (a NOT NULL violated)."""
    return isinstance(e, sqlite3.Error) and not isinstance(e, (sqlite3.IntegrityError, sqlite3.ProgrammingError,
                                                               sqlite3.InterfaceError))


class OutboxOpenError(Exception):
    """audit.db cannot be opened for writing: one line with the cause and what to check."""


def open_outbox(path: str | Path, max_events: int = 500_000, clock: Callable[[], datetime] | None = None,
                bridge_id: str | None = None) -> "Outbox":
    """`Outbox(...)` for the daemon: a file it cannot write is one clear error, not a traceback."""
    try:
        return Outbox(path, max_events, clock=clock or _utc_now, bridge_id=bridge_id)
    except (sqlite3.Error, OSError) as e:
        code = getattr(e, "sqlite_errorname", None) or type(e).__name__
        directory = Path(path).parent
        raise OutboxOpenError(
            f"{path}: cannot open the audit log for writing: {e} ({code}); the door stays locked (no decision "
            f"without its audit row); check: owner and mode of the file and of {directory} (`ls -l {directory}`; "
            f"the service user must own both), a read-only filesystem (`mount`), free space (`df -h {directory}`)"
        ) from None


class Outbox:
    def __init__(self, path: str | Path, max_events: int = 500_000, clock: Callable[[], datetime] = _utc_now,
                 *, bridge_id: str | None = None) -> None:
        self.path = str(path)
        self.max_events = max_events
        self._clock = clock
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self.mark = HighWaterMark(Path(self.path + HighWaterMark.SUFFIX))
        self._count = self._pending = self._next_seq = 0
        self._urgent = True  # unsent urgent rows may exist: the first `pending` looks (then only after one is written)
        self._recount()
        self.lost: LostEvents | None = None
        self._check_high_water(bridge_id)

    def _recount(self) -> None:
        """Counters from the database itself: after a failed write, memory is not to be trusted."""
        self._count = self.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        self._pending = self.conn.execute("SELECT count(*) FROM events WHERE acked = 0").fetchone()[0]
        top = self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        self._next_seq = max(top, self.mark.value) + 1

    def _check_high_water(self, bridge_id: str | None) -> None:
        """Rows the mark says were committed and the database does not have: never silent."""
        top = self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        if self.mark.value > top:
            self.lost = LostEvents(first_seq=top + 1, last_seq=self.mark.value)
            body: dict[str, Any] = {"firstSeq": self.lost.first_seq, "lastSeq": self.lost.last_seq,
                                    "count": self.lost.count, "cause": _LOST_CAUSE}
            if bridge_id is not None:
                body = {"bridgeId": bridge_id, **body}
            log.error("audit_events_lost", file=self.path, first_seq=self.lost.first_seq, last_seq=self.lost.last_seq,
                      count=self.lost.count, cause=_LOST_CAUSE,
                      check="power supply and SD card health (dmesg, vcgencmd get_throttled); a quarantined "
                            "audit.db.corrupt-* copy may still hold them (`sqlite3 FILE .recover`)")
            self.append("AUDIT_EVENTS_LOST", body)
        elif top > self.mark.value:
            self.mark.advance(top)

    def _migrate(self) -> None:
        migrate(self.conn, _MIGRATIONS, lambda found, latest: RuntimeError(
            f"{self.path}: outbox schema {found} is newer than this daemon ({latest}); upgrade door-bridge"))

    def close(self) -> None:
        with self._lock:
            self.conn.close()
            self.mark.close()

    # --- writing ------------------------------------------------------------------------------

    def append(self, type_: str, body: dict[str, Any], *, at: datetime | None = None) -> Event:
        """Commit one event (fsync'd) and return it. Thread-safe."""
        return self.append_many([(type_, body)], at=at)[0]

    def append_many(self, items: list[tuple[str, dict[str, Any]]], *, at: datetime | None = None) -> list[Event]:
        """Commit several events in ONE transaction (one fsync): all are durable, or none.

        When the store is full, room is made from the least valuable events first (`value_of`);
        an incoming event that could only make room by evicting something worth more is not
        stored but counted (`refused` in the newest unsent OUTBOX_OVERFLOW). Its Event has seq 0.
        Raises OutboxWriteError (nothing committed, counters re-read from disk) on a failed write.
        """
        at_text = iso(at or self._clock())
        rows = [(str(uuid.uuid4()), at_text, type_, json.dumps(body, separators=(",", ":"), default=str))
                for type_, body in items]
        events = []
        with self._lock:
            with self._transaction():
                for (event_id, _, type_, text), (_, body) in zip(rows, items):
                    value = value_of(type_, body)
                    if self._count >= self.max_events:
                        self._make_room(at_text, value)
                        if self._count >= self.max_events:  # only worthier events left: keep them
                            self._note_overflow(at_text, {"refused": 1})
                            events.append(Event(0, event_id, at_text, type_, body, False))
                            continue
                    seq = self._insert(event_id, at_text, type_, text, value)
                    self._urgent = self._urgent or type_ in URGENT_TYPES
                    events.append(Event(seq, event_id, at_text, type_, body, False))
            top = self._next_seq - 1
        self.mark.advance(top)
        return events

    def _insert(self, event_id: str, at_text: str, type_: str, text: str, value: int) -> int:
        seq = self._next_seq
        self.conn.execute("INSERT INTO events(seq, id, at, type, body, acked) VALUES (?,?,?,?,?,0)",
                          (seq, event_id, at_text, type_, text))
        self._next_seq += 1
        self._count += 1
        self._pending += 1
        return seq

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, under the caller's lock: all of it is durable, or none is, and a
        storage failure surfaces as OutboxWriteError with the counters re-read from disk."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield
            self.conn.execute("COMMIT")
        except BaseException as e:
            self._abandon()
            if _is_storage_error(e):
                raise OutboxWriteError(self.path, e) from e
            raise

    def _abandon(self) -> None:
        """After any failed write: roll back if SQLite has not already (SQLITE_FULL rolls back by
        itself, and a second ROLLBACK's error would hide the real cause), then re-read counters."""
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            self._recount()

    def _make_room(self, at_text: str, value: int = EVIDENCE) -> bool:
        """Inside the append transaction: free a tenth of the store, acknowledged events first,
        then unsent ones from the least valuable up to (never above) `value`. False if nothing
        could be freed for an event of that value."""
        room = max(1, self.max_events // 10)
        acked = self.conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE acked = 1 ORDER BY seq LIMIT ?)", (room,)
        ).rowcount
        self._count -= acked
        if acked >= room:
            return True
        need = room - acked
        dropped: dict[str, int] = {}
        first = last = oldest = newest = None
        for level in range(JUNK, value + 1):
            if need <= 0:
                break
            where = f"acked = 0 AND ({_VALUE_SQL}) = ?"
            picked = f"SELECT seq FROM events WHERE {where} ORDER BY seq LIMIT ?"
            for type_, n, lo, hi, at_lo, at_hi in self.conn.execute(
                    f"SELECT type, count(*), min(seq), max(seq), min(at), max(at) FROM events WHERE seq IN ({picked}) "
                    "GROUP BY type", (level, need)).fetchall():
                dropped[type_] = dropped.get(type_, 0) + n
                first, last = min(first or lo, lo), max(last or hi, hi)
                oldest, newest = min(oldest or at_lo, at_lo), max(newest or at_hi, at_hi)
            gone = self.conn.execute(f"DELETE FROM events WHERE seq IN ({picked})", (level, need)).rowcount
            need -= gone
            self._count -= gone
            self._pending -= gone
        total = sum(dropped.values())
        if total:
            self._note_overflow(at_text, {"dropped": total, "droppedByType": dropped, "firstSeq": first,
                                          "lastSeq": last, "oldestAt": oldest, "newestAt": newest})
        return bool(acked or total)

    def _note_overflow(self, at_text: str, change: dict[str, Any]) -> None:
        """Losses are added into the newest unsent OUTBOX_OVERFLOW (one counted summary, so the
        record of a flood does not itself become a flood); a new one only when none is unsent."""
        row = self.conn.execute(
            "SELECT seq, body FROM events WHERE type = 'OUTBOX_OVERFLOW' AND acked = 0 ORDER BY seq DESC LIMIT 1").fetchone()
        body: dict[str, Any] = json.loads(row[1]) if row else {
            "dropped": 0, "droppedByType": {}, "refused": 0, "firstSeq": None, "lastSeq": None, "oldestAt": None,
            "newestAt": None, "maxEvents": self.max_events, "policy": _EVICTION_POLICY}
        body["dropped"] = body.get("dropped", 0) + change.get("dropped", 0)
        body["refused"] = body.get("refused", 0) + change.get("refused", 0)
        by_type = body.setdefault("droppedByType", {})
        for type_, n in change.get("droppedByType", {}).items():
            by_type[type_] = by_type.get(type_, 0) + n
        for key, pick in (("firstSeq", min), ("oldestAt", min), ("lastSeq", max), ("newestAt", max)):
            values = [v for v in (body.get(key), change.get(key)) if v is not None]
            body[key] = pick(values) if values else None
        text = json.dumps(body, separators=(",", ":"))
        if row:
            self.conn.execute("UPDATE events SET body = ? WHERE seq = ?", (text, row[0]))
        else:
            self._insert(str(uuid.uuid4()), at_text, "OUTBOX_OVERFLOW", text, EVIDENCE)

    def ack(self, ids: list[str]) -> int:
        """Mark events the central confirmed it stored. Unknown ids are ignored (idempotent)."""
        if not ids:
            return 0
        with self._lock:
            n = 0
            with self._transaction():
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk:chunk + 500]
                    n += self.conn.execute(
                        f"UPDATE events SET acked = 1 WHERE acked = 0 AND id IN ({','.join('?' * len(part))})", part
                    ).rowcount
            self._pending -= n
        return n

    # --- reading ------------------------------------------------------------------------------

    # Reads take the lock too: on the one shared connection a SELECT during another thread's open
    # append transaction would see rows that are not committed yet (and might never be).

    def pending(self, limit: int = 500, after_seq: int = 0) -> list[Event]:
        """Unsent events, oldest first — except `URGENT_TYPES` (duress, alarms), which lead."""
        with self._lock:
            urgent: list[tuple[Any, ...]] = []
            if self._urgent:
                urgent = self.conn.execute(
                    f"SELECT seq, id, at, type, body, acked FROM events WHERE acked = 0 AND seq > ? AND {_URGENT_SQL} "
                    "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
                self._urgent = bool(urgent)
            rows = self.conn.execute(
                f"SELECT seq, id, at, type, body, acked FROM events WHERE acked = 0 AND seq > ? "
                f"{'AND NOT ' + _URGENT_SQL if urgent else ''} ORDER BY seq LIMIT ?",
                (after_seq, limit - len(urgent)),
            ).fetchall() if len(urgent) < limit else []
        return [_event(r) for r in urgent + rows]

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
        """Unsent events, kept in memory (exact: every write goes through this object, and a
        failed write re-reads them from the database)."""
        return self._pending

    def oldest_pending_at(self) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT at FROM events WHERE acked = 0 ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None

    def count(self) -> int:
        return self._count


def oldest_unsent_at(path: Path) -> str | None:
    """When the oldest event not yet acknowledged by the central was written, on a read-only
    connection of its own (the daemon's status refresher never contends with the writer)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        row = c.execute("SELECT at FROM events WHERE acked = 0 ORDER BY seq LIMIT 1").fetchone()
    return row[0] if row else None


def _event(row: tuple[Any, ...]) -> Event:
    return Event(row[0], row[1], row[2], row[3], json.loads(row[4]), bool(row[5]))


