"""The grant cache's on-disk schema, with a version and forward-only migrations.

sqlite-utils creates tables and indexes (readable, and a technician can `sqlite-utils tables
grants.db` on the Pi); the hot path reads them with plain prepared statements (see cache.py).
`PRAGMA user_version` is the schema version, so an upgraded daemon migrates the cache it has
instead of throwing it away.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Callable

from verifier.migrations import migrate as run_migrations

if TYPE_CHECKING:  # the migration steps' type; verifier.migrations imports it only when a step is due
    import sqlite_utils

SCHEMA_VERSION = 2


def _v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["zones"].create({"id": str, "name": str, "schedule_aware": int}, pk="id")
    db["zone_readers"].create({"reader_id": str, "zone_id": str}, pk=("reader_id", "zone_id"))
    # Every reader id the bundle mentions (zones' `readers`, cards' and passcodes' `devices`):
    # a reader in none of them is UNKNOWN_READER, a configuration fault worth its own reason.
    db["known_readers"].create({"reader_id": str}, pk="reader_id")
    db["users"].create({"id": str, "name": str, "active": int}, pk="id")
    db["grants"].create(
        {"id": str, "user_id": str, "zone_id": str, "starts_ms": int, "ends_ms": int, "revoked": int}, pk="id"
    )
    db["grants"].create_index(["user_id", "zone_id"])
    db["shifts"].create({"id": str, "user_id": str, "zone_id": str, "starts_ms": int, "ends_ms": int}, pk="id")
    db["shifts"].create_index(["user_id", "ends_ms"])
    # Cards: SNA (`number`, `devices`, `start_at`/`end_at`), Sifely IC cards (`cardNumber`,
    # `startDate`/`endDate`), or Frontelio user cards (`userId`, zone grants apply).
    db["cards"].create(
        {
            "number": str, "name": str, "user_id": str, "devices": str,
            "starts_ms": int, "ends_ms": int, "revoked": int, "origin": str,
        },
        pk="number",
    )
    # Visitor passes by SHA-256 of the invite code (192-bit codes: a fast hash is enough).
    db["visitors"].create(
        {
            "code_sha256": str, "id": str, "name": str, "zone_ids": str,
            "starts_ms": int, "ends_ms": int, "revoked": int,
        },
        pk="code_sha256",
    )
    db["visitors"].create_index(["id"], unique=True)
    # Timed passcodes (Sifely `keyboardPwd`) by salted scrypt hash: a PIN is guessable, so its
    # hash must be slow to brute-force from a stolen SD card.
    db["passcodes"].create(
        {
            "id": str, "pin_hash": str, "name": str, "user_id": str, "devices": str,
            "starts_ms": int, "ends_ms": int, "revoked": int,
        },
        pk="id",
    )
    db["passcodes"].create_index(["pin_hash"])
    # Public keys (and, where a site opts into HS256, secrets) that sign credential JWTs.
    db["jwks"].create({"kid": str, "jwk": str}, pk="kid")


def _v2(db: sqlite_utils.Database) -> None:
    """Door policy (issue 15): roles and role grants, weekly schedules, holidays, door modes."""
    db["roles"].create({"id": str, "name": str, "override": int}, pk="id")
    db["user_roles"].create({"user_id": str, "role_id": str}, pk=("user_id", "role_id"))
    db["user_roles"].create_index(["role_id"])
    # A Frontelio Grant to a Role: it admits every holder carrying the role, for as long as both
    # the grant and the holder's role last.
    db["role_grants"].create(
        {"id": str, "role_id": str, "zone_id": str, "starts_ms": int, "ends_ms": int, "revoked": int,
         "schedule_id": str},
        pk="id",
    )
    db["role_grants"].create_index(["role_id", "zone_id"])
    db["grants"].add_column("schedule_id", str)
    # Few and small: kept as their validated JSON, parsed once per cache version (never per decision).
    db["schedules"].create({"id": str, "body": str}, pk="id")
    db["holidays"].create({"id": str, "body": str}, pk="id")
    db["door_modes"].create({"id": str, "body": str}, pk="id")


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {1: _v1, 2: _v2}


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """WAL so readers (decisions) never wait for the writer (bundle apply)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # the cache can always be re-synced; the outbox is FULL
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


FileIdentity = tuple[int, int] | None


def file_identity(path: str) -> FileIdentity:
    """(device, inode) of the file now at `path`; None when there is none.

    An open SQLite connection keeps reading the inode it opened. When grants.db is replaced or
    deleted under a running daemon, the applier writes the new file while an old connection would
    go on deciding from the old one — revocations silently ineffective. Comparing identities on
    refresh is how a long-lived connection notices and reopens."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; refuse a database written by a newer daemon."""
    return run_migrations(conn, MIGRATIONS, lambda found, latest: RuntimeError(
        f"grant cache schema {found} is newer than this daemon understands ({latest}); "
        "upgrade door-bridge or remove the cache file to re-sync"))
