"""verifier.migrations.migrate: the one runner the grant cache, the outbox and the learned cache use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

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
