"""The audit outbox on real SQLite files."""

from __future__ import annotations

import sqlite3

import pytest

from bridge.state.outbox import Outbox


def test_events_survive_reopen_in_order_with_uuids(tmp_path):
    box = Outbox(tmp_path / "audit.db")
    ids = [box.append("VERIFY", {"n": i}).id for i in range(5)]
    box.close()
    box = Outbox(tmp_path / "audit.db")
    pending = box.pending()
    assert [e.id for e in pending] == ids and [e.body["n"] for e in pending] == list(range(5))
    assert len(set(ids)) == 5 and all(len(i) == 36 for i in ids)


def test_ack_is_idempotent_and_only_acked_leave_pending(tmp_path):
    box = Outbox(tmp_path / "audit.db")
    events = [box.append("VERIFY", {"n": i}) for i in range(4)]
    assert box.ack([events[0].id, events[2].id, "not-an-id"]) == 2
    assert box.ack([events[0].id]) == 0
    assert [e.body["n"] for e in box.pending()] == [1, 3]
    assert box.depth() == 2


def test_overflow_prunes_acked_first_then_records_what_was_dropped(tmp_path):
    box = Outbox(tmp_path / "audit.db", max_events=100)
    first = [box.append("VERIFY", {"n": i}) for i in range(100)]
    box.ack([e.id for e in first[:5]])
    box.append("VERIFY", {"n": 100})  # full: 5 acked go, then 5 unsent must go
    types = [e.type for e in box.recent(1000)]
    assert "OUTBOX_OVERFLOW" in types
    overflow = next(e for e in box.recent(1000) if e.type == "OUTBOX_OVERFLOW")
    assert overflow.body["dropped"] == 5 and overflow.body["firstSeq"] == 6 and overflow.body["lastSeq"] == 10
    assert box.count() <= 100
    remaining = [e.body.get("n") for e in box.pending() if e.type == "VERIFY"]
    assert remaining == list(range(10, 101))


def test_no_overflow_event_when_acked_events_make_room(tmp_path):
    box = Outbox(tmp_path / "audit.db", max_events=100)
    box.ack([box.append("VERIFY", {"n": i}).id for i in range(100)])
    box.append("VERIFY", {"n": 100})
    assert all(e.type == "VERIFY" for e in box.recent(1000))


def test_durability_settings(tmp_path):
    box = Outbox(tmp_path / "audit.db")
    assert box.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_newer_schema_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "audit.db"
    Outbox(path).append("VERIFY", {"n": 1})
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Outbox(path)


def test_readers_never_see_a_batch_that_is_still_being_written(tmp_path):
    """pending() from the replication thread while the worker holds an open append transaction."""
    import threading

    box = Outbox(tmp_path / "audit.db")
    box.append("VERIFY", {"n": 0})
    inside = threading.Event()
    release = threading.Event()
    original = box._make_room

    def slow_room(at_text, *value):
        inside.set()
        release.wait(5)
        return original(at_text, *value)

    box.max_events = 1  # the next append calls _make_room inside its transaction
    box._make_room = slow_room  # type: ignore[method-assign]
    writer = threading.Thread(target=box.append_many, args=([("VERIFY", {"n": 1})],))
    writer.start()
    assert inside.wait(5)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(e.id for e in box.pending()))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive(), "a read must wait for the open transaction"
    release.set()
    writer.join(5)
    reader.join(5)
    # what the reader saw is exactly the committed state after the append, not a half-way view
    assert seen == [e.id for e in box.pending()]
