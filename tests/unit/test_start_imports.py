"""What a start pays for before READY: no library loaded that this start does not use.

`door-bridge run` on a Pi Zero 2 W spends most of its cold start importing (bench/startup.py
--profile-imports shows where). sqlite-utils (with click and pluggy, ~40-80 ms here) only creates
and migrates tables: a start whose grants.db and audit.db are already at the current schema —
every start but the first after an install or upgrade — must not load it. The files here are
real SQLite files made by the real classes; the check runs in a fresh interpreter so that nothing
this test process imported counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bridge.state.outbox import Outbox
from verifier import schema
from verifier.cache import GrantCache

ROOT = Path(__file__).resolve().parents[2]
MIGRATION_ONLY = ("sqlite_utils", "click", "pluggy")

_OPEN_AS_THE_DAEMON_DOES = """
import json, sys
from bridge.service.daemon import Daemon
from bridge.state.outbox import open_outbox
from verifier.cache import GrantCache
cache = GrantCache(sys.argv[1])
outbox = open_outbox(sys.argv[2])
print(json.dumps({"loaded": sorted(m for m in %r if m in sys.modules), "version": cache.conn.execute("PRAGMA user_version").fetchone()[0]}))
""" % (MIGRATION_ONLY,)


def _open_in_fresh_interpreter(grants: Path, audit: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _OPEN_AS_THE_DAEMON_DOES, str(grants), str(audit)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_start_with_current_schema_loads_no_migration_library(tmp_path: Path) -> None:
    grants, audit = tmp_path / "grants.db", tmp_path / "audit.db"
    GrantCache(grants).conn.close()  # created and migrated here, as the first start would
    Outbox(audit).close()
    seen = _open_in_fresh_interpreter(grants, audit)
    assert seen == {"loaded": [], "version": schema.SCHEMA_VERSION}


def test_first_start_still_creates_the_schema(tmp_path: Path) -> None:
    """The lazy import must not skip the migration itself: empty files get every table."""
    grants, audit = tmp_path / "grants.db", tmp_path / "audit.db"
    seen = _open_in_fresh_interpreter(grants, audit)
    assert seen["version"] == schema.SCHEMA_VERSION
    box = Outbox(audit)  # the events table exists: an append round-trips
    try:
        box.append("BOOT", {"bridgeId": "B"})
        assert [e.type for e in box.pending(10)] == ["BOOT"]
    finally:
        box.close()
