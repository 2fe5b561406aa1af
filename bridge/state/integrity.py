"""Start-up integrity check of the state databases, and quarantine of a damaged one.

An SD card that lost power mid-write, a truncated copy, a bad sector: SQLite's own checks find
them. A damaged file is moved aside (never deleted — it is evidence, and may hold unsent audit
rows a technician can recover with `sqlite3 .recover`), a fresh one is started, and the door
runs in its fail mode until the cache is re-synced: with no grants every decision is DENY
`CACHE_STALE`, so the relay stays de-energised (fail-secure).
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import structlog

log = structlog.get_logger()


def problem(path: Path, *, full: bool) -> str | None:
    """None if the database is sound (or absent); otherwise what SQLite says is wrong."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check(20)" if full else "PRAGMA quick_check(20)").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    messages = [r[0] for r in rows]
    return None if messages == ["ok"] else "; ".join(messages)[:300]


def quarantine(path: Path, reason: str) -> Path:
    """Move the database (and its WAL/SHM) aside; return where it went."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(target) + suffix))
    log.error("state_db_quarantined", file=str(path), moved_to=str(target), problem=reason,
              check="power supply and SD card health (dmesg, vcgencmd get_throttled); the door denies until "
                    "the cache is re-synced; unsent audit rows may be recoverable with `sqlite3 FILE .recover`")
    return target


def check_state_dir(state_dir: Path) -> list[dict[str, str]]:
    """Check grants.db (quick: it can be re-synced) and audit.db (full: it cannot)."""
    found = []
    for name, full in (("grants.db", False), ("audit.db", True)):
        path = state_dir / name
        why = problem(path, full=full)
        if why is not None:
            moved = quarantine(path, why)
            found.append({"file": name, "problem": why, "quarantinedAs": moved.name})
    return found
