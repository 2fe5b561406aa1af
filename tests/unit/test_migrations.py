"""An upgraded daemon keeps its cache and its unsent outbox: schema versions and forward migrations."""

from __future__ import annotations

import io
import sqlite3

import pytest
import sqlite_utils

from bridge.state import outbox as outbox_mod
from bridge.state.outbox import Outbox
from tests.support.harness import Site, door_records
from verifier import schema
from verifier.bundle import apply_bundle
from verifier.cache import GrantCache


def test_grant_cache_migrates_forward_keeping_grants(tmp_path, monkeypatch):
    site = Site()
    cache = GrantCache(tmp_path / "grants.db")
    apply_bundle(cache.conn, io.BytesIO(site.bundle(door_records("R1"))), site.key.public_key())
    cache.close()

    def v2(db):  # what a future release might add
        db["grants"].add_column("note", str)

    future = schema.SCHEMA_VERSION + 1
    monkeypatch.setattr(schema, "SCHEMA_VERSION", future)
    monkeypatch.setitem(schema.MIGRATIONS, future, v2)
    cache = GrantCache(tmp_path / "grants.db")
    assert cache.conn.execute("PRAGMA user_version").fetchone()[0] == future
    assert cache.meta.version == 1 and cache.card("6B06C2A25E99C68EDCBE") is not None
    assert "note" in [r[1] for r in cache.conn.execute("PRAGMA table_info(grants)")]
    cache.close()


def test_a_failing_migration_leaves_the_old_schema_and_data(tmp_path, monkeypatch):
    site = Site()
    cache = GrantCache(tmp_path / "grants.db")
    apply_bundle(cache.conn, io.BytesIO(site.bundle(door_records("R1"))), site.key.public_key())
    cache.close()

    def broken(db):
        db["grants"].add_column("note", str)
        raise RuntimeError("migration bug")

    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(schema.MIGRATIONS, current + 1, broken)
    with pytest.raises(RuntimeError, match="migration bug"):
        GrantCache(tmp_path / "grants.db")
    conn = sqlite3.connect(tmp_path / "grants.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current
    assert "note" not in [r[1] for r in conn.execute("PRAGMA table_info(grants)")]
    assert conn.execute("SELECT count(*) FROM cards").fetchone()[0] == 3


def test_cache_from_a_newer_daemon_is_refused(tmp_path):
    GrantCache(tmp_path / "grants.db").close()
    conn = sqlite3.connect(tmp_path / "grants.db")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this daemon"):
        GrantCache(tmp_path / "grants.db")


def test_outbox_migrates_forward_keeping_unsent_events(tmp_path, monkeypatch):
    box = Outbox(tmp_path / "audit.db")
    sent = box.append("VERIFY", {"n": 0})
    unsent = [box.append("VERIFY", {"n": i}) for i in range(1, 4)]
    box.ack([sent.id])
    box.close()

    def v2(db):
        db["events"].add_column("attempts", int, not_null_default=0)

    monkeypatch.setattr(outbox_mod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(outbox_mod._MIGRATIONS, 2, v2)
    box = Outbox(tmp_path / "audit.db")
    assert [e.id for e in box.pending()] == [e.id for e in unsent]
    assert box.depth() == 3
    assert box.conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_version_1_cache_migrates_to_door_policy_keeping_its_grants(tmp_path):
    """Issue 15's schema (roles, role grants, schedules, holidays, door modes) on a v1 cache."""
    site = Site()
    conn = sqlite3.connect(tmp_path / "grants.db", isolation_level=None)
    db = sqlite_utils.Database(conn)
    schema.MIGRATIONS[1](db)
    conn.execute("PRAGMA user_version=1")
    apply_v1 = [("zones", {"id": "zone_a", "name": "A", "schedule_aware": 0}),
                ("grants", {"id": "g1", "user_id": "u1", "zone_id": "zone_a", "starts_ms": 0, "ends_ms": 2**62, "revoked": 0})]
    for table, row in apply_v1:
        db[table].insert(row)
    conn.close()
    cache = GrantCache(tmp_path / "grants.db")
    assert cache.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION >= 2
    assert [g.zone_id for g in cache.grants("u1", "zone_a")] == ["zone_a"]
    tables = {r[0] for r in cache.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"roles", "user_roles", "role_grants", "schedules", "holidays", "door_modes"} <= tables
    apply_bundle(cache.conn, io.BytesIO(site.bundle(door_records("R1"))), site.key.public_key())
    cache.close()
