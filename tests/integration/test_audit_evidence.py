"""Audit evidence under attack and damage (issue 10, Medium 7, 8, 9), on real SQLite files."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from structlog.testing import capture_logs

from bridge.state.outbox import HighWaterMark, Outbox, OutboxWriteError

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT seq, type, acked FROM events ORDER BY seq").fetchall()


# --- Medium 7: a flood of junk never evicts evidence -------------------------------------------


def _verify(decision: str, reason: str | None = None, replay: bool = False, reader: str = "R1") -> dict:
    return {"decision": decision, "reason": reason, "replay": replay, "readerId": reader}


def test_a_junk_flood_never_evicts_grants_door_alarms_or_overflow_records(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "audit.db", max_events=100)
    grants = [box.append("VERIFY", _verify("GRANT") | {"n": i}).id for i in range(30)]
    alarm = box.append("DOOR_FORCED_OPEN", {"door": "main"}).id
    junk = [("VERIFY", _verify("DENY", "MALFORMED_CREDENTIAL")), ("VERIFY", _verify("DENY", "RATE_LIMITED")),
            ("VERIFY", _verify("GRANT", replay=True) | {"decision": "DENY"})]
    for i in range(3000):
        box.append(*junk[i % 3])
    kept = {e.id for e in box.pending(10_000)}
    assert set(grants) <= kept and alarm in kept
    overflows = [e for e in box.pending(10_000) if e.type == "OUTBOX_OVERFLOW"]
    assert overflows, "room was made: it must be recorded"
    remaining_junk = sum(1 for e in box.pending(10_000) if e.type == "VERIFY" and e.body.get("decision") == "DENY")
    accounted = sum(o.body["dropped"] + o.body.get("refused", 0) for o in overflows) + remaining_junk
    assert accounted == 3000, "every junk event is either kept, dropped or refused, and counted"
    assert box.count() <= 101 and box.depth() == len(_rows(tmp_path / "audit.db"))


def test_evidence_still_evicts_the_oldest_evidence_when_nothing_else_is_left(tmp_path: Path) -> None:
    """Storage stays bounded: grants only, the oldest go, and the overflow says which."""
    box = Outbox(tmp_path / "audit.db", max_events=100)
    for i in range(150):
        box.append("VERIFY", _verify("GRANT") | {"n": i})
    assert box.count() <= 100
    (overflow,) = [e for e in box.pending(1000) if e.type == "OUTBOX_OVERFLOW"]  # one counted summary
    kept = [e for e in box.pending(1000) if e.type == "VERIFY"]
    assert overflow.body["droppedByType"] == {"VERIFY": overflow.body["dropped"]}
    assert overflow.body["dropped"] + len(kept) == 150 and overflow.body["firstSeq"] == 1
    assert box.pending(1000)[-1].body.get("n") == 149


# --- Medium 8: a full disk leaves true counters and names its cause ------------------------------


def test_after_a_full_disk_counters_are_true_and_the_cause_is_sqlite_full(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    box = Outbox(path, max_events=60)
    for i in range(5):
        box.append("VERIFY", _verify("GRANT") | {"n": i})
    pages = box.conn.execute("PRAGMA page_count").fetchone()[0]
    box.conn.execute(f"PRAGMA max_page_count={pages + 2}")  # SQLite's own full-disk error on a real file
    errors: list[OutboxWriteError] = []
    for _ in range(40):
        try:
            box.append_many([("VERIFY", _verify("GRANT") | {"pad": "x" * 3000}) for _ in range(5)])
        except OutboxWriteError as e:
            errors.append(e)
    assert errors, "the filesystem filled up"
    message = str(errors[0])
    assert "SQLITE_FULL" in message and "df -h" in message and "cannot rollback" not in message
    on_disk = _rows(path)
    assert box.depth() == len(on_disk) == box.count()
    box.conn.execute("PRAGMA max_page_count=1073741823")  # space freed
    before = {seq for seq, _, _ in _rows(path)}
    for i in range(5):
        box.append("VERIFY", _verify("GRANT") | {"after": i})
    after = _rows(path)
    assert before <= {seq for seq, _, _ in after}, "no real unsent row was deleted for an inflated count"
    assert all(t != "OUTBOX_OVERFLOW" for _, t, _ in after), "no false overflow"
    assert box.depth() == len(after)


# --- Medium 9: a damaged WAL that drops committed rows is detected --------------------------------


_WRITER = textwrap.dedent("""
    import os, signal, sys
    from bridge.state.outbox import Outbox
    box = Outbox(sys.argv[1])
    box.conn.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(40):
        box.append("VERIFY", {"decision": "GRANT", "n": i})
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the rows live only in the WAL
""")


def test_a_flipped_bit_mid_wal_is_an_audit_event_and_an_error_never_silent(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "committed" in proc.stdout, proc.stderr
    wal = Path(str(path) + "-wal")
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], "big")
    frames = (len(data) - 32) // (24 + page_size)
    assert frames >= 40
    middle = 32 + (frames // 2) * (24 + page_size) + 24 + page_size // 2
    data[middle] ^= 0x10  # one bit, inside a committed frame's page
    wal.write_bytes(bytes(data))

    with capture_logs() as logs:
        box = Outbox(path)
    kept = [e for e in box.pending(1000) if e.type == "VERIFY"]
    assert 0 < len(kept) < 40, "SQLite really dropped the tail of the WAL"
    (lost,) = [e for e in box.pending(1000) if e.type == "AUDIT_EVENTS_LOST"]
    assert lost.body["count"] == 40 - len(kept) and lost.body["lastSeq"] == 40
    assert any(entry["event"] == "audit_events_lost" and entry["log_level"] == "error" for entry in logs)
    nxt = box.append("VERIFY", {"decision": "GRANT", "n": 99})
    assert nxt.seq > 40, "lost sequence numbers are never reused"
    box.close()
    with capture_logs() as again:
        Outbox(path).close()
    assert not any(entry["event"] == "audit_events_lost" for entry in again), "reported once, not at every start"


def test_a_damaged_mark_is_not_believed(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "audit.db")
    box.append("VERIFY", {"n": 1})
    box.close()
    mark = tmp_path / ("audit.db" + HighWaterMark.SUFFIX)
    mark.write_bytes(b"00000000000000009999 deadbeef\n")
    with capture_logs() as logs:
        box = Outbox(tmp_path / "audit.db")
    assert box.lost is None and any(e["event"] == "audit_mark_unreadable" for e in logs)
