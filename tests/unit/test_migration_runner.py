"""verifier.migrations.migrate: the one runner the grant cache, the outbox, the learned cache and emergency.db use."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from bridge.state.emergency_store import EmergencyStore, EmergencyStoreError
from bridge.state.learned_store import LearnedStore
from verifier.migrations import migrate


def _conn(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _too_new(found: int, latest: int) -> Exception:
    return RuntimeError(f"schema {found} is newer than {latest}")


def test_steps_run_in_order_from_the_files_version(tmp_path: Path) -> None:
    ran: list[int] = []
    steps = {1: lambda db: ran.append(1), 2: lambda db: ran.append(2), 3: lambda db: ran.append(3)}
    conn = _conn(tmp_path / "a.db")
    conn.execute("PRAGMA user_version=1")
    assert migrate(conn, steps, _too_new) == 3
    assert ran == [2, 3] and conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert migrate(conn, steps, _too_new) == 3 and ran == [2, 3]


def test_a_failing_step_leaves_the_file_at_the_version_before_it(tmp_path: Path) -> None:
    def broken(db: sqlite_utils.Database) -> None:
        db.conn.execute("CREATE TABLE half (x)")
        raise OSError("disk full")

    conn = _conn(tmp_path / "a.db")
    with pytest.raises(OSError):
        migrate(conn, {1: lambda db: db.conn.execute("CREATE TABLE one (x)"), 2: broken}, _too_new)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["one"]


def test_a_file_from_a_newer_daemon_is_refused_with_the_callers_error(tmp_path: Path) -> None:
    conn = _conn(tmp_path / "a.db")
    conn.execute("PRAGMA user_version=7")
    with pytest.raises(RuntimeError, match="schema 7 is newer than 1"):
        migrate(conn, {1: lambda db: None}, _too_new)


def test_the_learned_cache_refuses_a_newer_file_through_the_runner(tmp_path: Path) -> None:
    path = tmp_path / "learned.db"
    conn = _conn(path)
    conn.execute("PRAGMA user_version=9")
    conn.close()
    with pytest.raises(RuntimeError, match=r"learned cache schema 9 is newer than this daemon \(1\)"):
        LearnedStore(path, max_entries=10)


def test_emergency_db_refuses_a_newer_file_through_the_runner_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "emergency.db"
    conn = _conn(path)
    conn.execute("PRAGMA user_version=4")
    conn.close()
    with pytest.raises(EmergencyStoreError, match=rf"{path}: schema 4 is newer than this daemon \(1\)"):
        EmergencyStore(path)


def test_emergency_db_cut_before_its_version_was_set_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    """The first release created the tables, then set user_version: a cut in between left them at 0."""
    path = tmp_path / "emergency.db"
    conn = _conn(path)
    conn.execute("CREATE TABLE state (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
    conn.execute("""INSERT INTO state VALUES ('precedence', '{"lockdowns": {}}')""")
    conn.close()
    store = EmergencyStore(path)
    try:
        assert store.load("precedence") == {"lockdowns": {}}
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        store.close()


def test_only_the_runner_sets_a_schema_version() -> None:
    """Every SQLite owner goes through verifier.migrations: no module bumps `user_version` itself."""
    root = Path(__file__).resolve().parents[2]
    setters = [f"{p.relative_to(root)}:{n}" for folder in ("bridge", "verifier") for p in sorted((root / folder).rglob("*.py"))
               for n, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r"PRAGMA user_version\s*=", line) and p.name != "migrations.py"]
    assert setters == []
