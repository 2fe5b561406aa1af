"""The one migration runner for the SQLite files door-bridge keeps: grant cache, outbox, learned cache,
emergency.db.

`PRAGMA user_version` is a file's schema version. Each step runs in its own IMMEDIATE transaction
together with its version bump, so a power cut leaves the file at the version before or after a
step, never between; a file written by a newer daemon is refused (`too_new`), never guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by migrate() only when a step is due: see there
    import sqlite_utils

Step = Callable[["sqlite_utils.Database"], None]


def migrate(conn: sqlite3.Connection, steps: Mapping[int, Step], too_new: Callable[[int, int], Exception]) -> int:
    """Run the steps after the file's version, in order; return the version it is at now.
    `too_new(found, latest)` is the error for a file from a newer daemon."""
    latest = max(steps)
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > latest:
        raise too_new(current, latest)
    if current == latest:
        return latest
    # sqlite-utils (with click and pluggy) costs ~40-80 ms to import: a start whose files are at
    # the current schema — every start but the first after an install or upgrade — must not pay
    # it before READY (bench/startup.py --profile-imports; tests/unit/test_start_imports.py).
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for version in range(current + 1, latest + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            steps[version](db)
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return latest
