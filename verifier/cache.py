"""Read side of the grant cache: point look-ups with prepared statements, memory flat in N.

Only the handful of zones and keys are held in memory; everything per-holder stays on disk behind
an index. `PRAGMA data_version` tells us cheaply when another connection (the bundle applier,
possibly another process) has committed, so derived in-memory state is refreshed exactly then.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from verifier import schema
from verifier.door_policy import DoorRecords
from verifier.hashing import PinHashing
from verifier.timeutil import MAX_MS


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    name: str | None
    schedule_aware: bool


@dataclass(frozen=True, slots=True)
class Window:
    starts_ms: int
    ends_ms: int
    revoked: bool


@dataclass(frozen=True, slots=True)
class GrantListing:
    """One grant as `grants list` shows it, with its holder's name."""

    id: str
    user_id: str
    user_name: str | None
    zone_id: str
    window: Window


@dataclass(frozen=True, slots=True)
class CardListing:
    """One card as `grants list` shows it; `devices` is the stored JSON text."""

    number: str
    name: str | None
    user_id: str | None
    devices: str | None
    window: Window


@dataclass(frozen=True, slots=True)
class UserRow:
    name: str | None
    active: bool


@dataclass(frozen=True, slots=True)
class CardRow:
    name: str | None
    user_id: str | None
    devices: tuple[str, ...] | None
    window: Window


@dataclass(frozen=True, slots=True)
class HeldCard:
    """A card and its holder's user row (None: no holder, or one the bundle does not list), read
    in one statement: a card decision's first look-up."""

    card: CardRow
    holder: UserRow | None


@dataclass(frozen=True, slots=True)
class GrantRow:
    zone_id: str
    window: Window
    schedule_id: str | None = None  # a weekly access pattern on top of the window (schedule.py)


@dataclass(frozen=True, slots=True)
class VisitorRow:
    name: str | None
    zone_ids: tuple[str, ...]
    window: Window


@dataclass(frozen=True, slots=True)
class PasscodeRow:
    name: str | None
    user_id: str | None
    devices: tuple[str, ...]
    window: Window


@dataclass(frozen=True, slots=True)
class CacheMeta:
    version: int
    issued_at_ms: int
    not_after_ms: int
    pin_hashing: PinHashing | None


class GrantCache:
    def __init__(self, path: str | Path, on_replaced: Callable[[str], None] | None = None) -> None:
        self.path = str(path)
        self.conn: sqlite3.Connection = schema.connect(self.path)
        schema.migrate(self.conn)
        self._identity = schema.file_identity(self.path)
        self._on_replaced = on_replaced
        self.reopened = 0
        self._data_version = -1
        self.meta = CacheMeta(0, 0, MAX_MS, None)
        self._zones: dict[str, Zone] = {}
        self._reader_zones: dict[str, tuple[Zone, ...]] = {}
        self._known: dict[str, bool] = {}
        self._jwks: dict[str, dict[str, Any]] | None = None
        self._door_records: DoorRecords | None = None
        self.generation = 0  # moves on every reload: derived state (door modes) rebuilds on it
        self._held = False
        self.refresh()

    def close(self) -> None:
        self.conn.close()

    def _reopen(self, what: str) -> None:
        """Decide from the file at `path` (the one the applier writes), never from an orphaned
        inode. A deleted cache comes back empty (version 0: CACHE_STALE until the next sync)."""
        self.conn.close()
        self.conn = schema.connect(self.path)
        schema.migrate(self.conn)
        self._identity = schema.file_identity(self.path)
        self._data_version = -1
        self.reopened += 1
        if self._on_replaced is not None:
            self._on_replaced(what)

    def invalidate(self) -> None:
        """After a commit on THIS connection (data_version only moves for other connections)."""
        self._data_version = -1

    @contextmanager
    def one_version(self) -> Iterator[None]:
        """Decide a batch from one cache version: look for a new one once, at the start.

        Every look is a `stat` and a `PRAGMA data_version`, and each lets go of the interpreter
        lock; under load, getting it back cost more than the look (cProfile of the decision
        worker in bench/load.py at 1,000 scans/s: `refresh` ~120 µs a decision, 12 % of the
        worker). A bundle committed during the batch is seen by the next."""
        self.refresh()
        self._held = True
        try:
            yield
        finally:
            self._held = False

    def refresh(self) -> bool:
        """Reload derived state if anyone committed since we last looked. Returns True if it did."""
        if self._held:
            return False
        identity = schema.file_identity(self.path)
        if identity != self._identity:
            self._reopen("replaced" if identity is not None else "deleted")
        dv = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if dv == self._data_version:
            return False
        self._data_version = dv
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        pin = PinHashing.from_claim(json.loads(meta["pin_hash"])) if "pin_hash" in meta else None
        self.meta = CacheMeta(int(meta.get("version", 0)), int(meta.get("issued_at_ms", 0)),
                              int(meta.get("not_after_ms", MAX_MS)), pin)
        self._zones = {r[0]: Zone(r[0], r[1], bool(r[2])) for r in self.conn.execute("SELECT id, name, schedule_aware FROM zones")}
        self._reader_zones = {}
        self._known = {}
        self._jwks = None
        self._door_records = None
        self.generation += 1
        return True

    # --- readers and zones (small; memoised per cache version) --------------------------------

    def zones_for_reader(self, reader_id: str) -> tuple[Zone, ...]:
        zones = self._reader_zones.get(reader_id)
        if zones is None:
            rows = self.conn.execute("SELECT zone_id FROM zone_readers WHERE reader_id = ?", (reader_id,)).fetchall()
            zones = tuple(self._zones[r[0]] for r in rows if r[0] in self._zones)
            if len(self._reader_zones) < 4096:
                self._reader_zones[reader_id] = zones
        return zones

    def reader_known(self, reader_id: str) -> bool:
        known = self._known.get(reader_id)
        if known is None:
            known = self.conn.execute("SELECT 1 FROM known_readers WHERE reader_id = ?", (reader_id,)).fetchone() is not None
            if len(self._known) < 4096:
                self._known[reader_id] = known
        return known

    def zone(self, zone_id: str) -> Zone | None:
        return self._zones.get(zone_id)

    # --- point look-ups ---------------------------------------------------------------------

    def user(self, user_id: str) -> UserRow | None:
        row = self.conn.execute("SELECT name, active FROM users WHERE id = ?", (user_id,)).fetchone()
        return None if row is None else UserRow(row[0], bool(row[1]))

    def card(self, number: str) -> CardRow | None:
        row = self.conn.execute(
            "SELECT name, user_id, devices, starts_ms, ends_ms, revoked FROM cards WHERE number = ?", (number,)
        ).fetchone()
        if row is None:
            return None
        return CardRow(row[0], row[1], _tuple(row[2]), Window(row[3], row[4], bool(row[5])))

    def held_card(self, number: str) -> HeldCard | None:
        """`card` and `user` of its holder in one statement (a LEFT JOIN on the users' primary
        key): every look-up on the decision path costs a statement's fixed price, so the hot path
        pays it once per thing it must know."""
        row = self.conn.execute(
            "SELECT c.name, c.user_id, c.devices, c.starts_ms, c.ends_ms, c.revoked, u.id, u.name, u.active "
            "FROM cards c LEFT JOIN users u ON u.id = c.user_id WHERE c.number = ?", (number,)
        ).fetchone()
        if row is None:
            return None
        card = CardRow(row[0], row[1], _tuple(row[2]), Window(row[3], row[4], bool(row[5])))
        return HeldCard(card, None if row[6] is None else UserRow(row[7], bool(row[8])))

    def zone_grants(self, user_id: str, zone_id: str) -> list[GrantRow]:
        """`grants` and `role_grants` of the holder in the zone, in one statement. Their order
        does not matter to a decision: every row is for this zone, so the first that admits and
        the most specific denial are the same whichever comes first."""
        rows = self.conn.execute(
            "SELECT starts_ms, ends_ms, revoked, schedule_id FROM grants WHERE user_id = ? AND zone_id = ? "
            "UNION ALL SELECT g.starts_ms, g.ends_ms, g.revoked, g.schedule_id FROM user_roles u "
            "JOIN role_grants g ON g.role_id = u.role_id WHERE u.user_id = ? AND g.zone_id = ?",
            (user_id, zone_id, user_id, zone_id),
        ).fetchall()
        return [GrantRow(zone_id, Window(r[0], r[1], bool(r[2])), r[3]) for r in rows]

    def grants(self, user_id: str, zone_id: str) -> list[GrantRow]:
        rows = self.conn.execute(
            "SELECT starts_ms, ends_ms, revoked, schedule_id FROM grants WHERE user_id = ? AND zone_id = ?", (user_id, zone_id)
        ).fetchall()
        return [GrantRow(zone_id, Window(r[0], r[1], bool(r[2])), r[3]) for r in rows]

    def role_grants(self, user_id: str, zone_id: str) -> list[GrantRow]:
        """Grants to a role the holder carries now: removing the role or the grant ends them."""
        rows = self.conn.execute(
            "SELECT g.starts_ms, g.ends_ms, g.revoked, g.schedule_id FROM user_roles u "
            "JOIN role_grants g ON g.role_id = u.role_id WHERE u.user_id = ? AND g.zone_id = ?", (user_id, zone_id)
        ).fetchall()
        return [GrantRow(zone_id, Window(r[0], r[1], bool(r[2])), r[3]) for r in rows]

    def roles_of(self, user_id: str) -> frozenset[str]:
        return frozenset(r[0] for r in self.conn.execute("SELECT role_id FROM user_roles WHERE user_id = ?", (user_id,)))

    def door_records(self) -> DoorRecords:
        """Door modes, schedules, holidays and override roles of this cache version (memoised)."""
        if self._door_records is None:
            from verifier import door_policy

            self._door_records = DoorRecords(
                policies=tuple(door_policy.door_policy_of(b) for (b,) in self.conn.execute("SELECT body FROM door_modes ORDER BY id")),
                schedules={s.id: s for s in (door_policy.schedule_of(b) for (b,) in self.conn.execute("SELECT body FROM schedules"))},
                holidays=tuple(door_policy.holiday_of(b) for (b,) in self.conn.execute("SELECT body FROM holidays ORDER BY id")),
                override_roles=frozenset(r[0] for r in self.conn.execute("SELECT id FROM roles WHERE override = 1")),
            )
        return self._door_records

    def on_shift(self, user_id: str, zone_id: str, now_ms: int) -> bool:
        """A shift with no zone covers every schedule-aware zone of that user."""
        row = self.conn.execute(
            "SELECT 1 FROM shifts WHERE user_id = ? AND ends_ms > ? AND starts_ms <= ? "
            "AND (zone_id IS NULL OR zone_id = ?) LIMIT 1",
            (user_id, now_ms, now_ms, zone_id),
        ).fetchone()
        return row is not None

    def visitor(self, code_sha256: str) -> VisitorRow | None:
        row = self.conn.execute(
            "SELECT name, zone_ids, starts_ms, ends_ms, revoked FROM visitors WHERE code_sha256 = ?", (code_sha256,)
        ).fetchone()
        if row is None:
            return None
        return VisitorRow(row[0], _tuple(row[1]) or (), Window(row[2], row[3], bool(row[4])))

    def passcodes(self, pin_hash: str) -> list[PasscodeRow]:
        rows = self.conn.execute(
            "SELECT name, user_id, devices, starts_ms, ends_ms, revoked FROM passcodes WHERE pin_hash = ?", (pin_hash,)
        ).fetchall()
        return [PasscodeRow(r[0], r[1], _tuple(r[2]) or (), Window(r[3], r[4], bool(r[5]))) for r in rows]

    def jwks(self) -> dict[str, dict[str, Any]]:
        if self._jwks is None:
            self._jwks = {kid: json.loads(jwk) for kid, jwk in self.conn.execute("SELECT kid, jwk FROM jwks")}
        return self._jwks

    # --- for operators ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        tables = ("zones", "users", "grants", "shifts", "cards", "visitors", "passcodes", "jwks")
        return {t: self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    def list_grants(self, limit: int) -> list[GrantListing]:
        rows = self.conn.execute("SELECT g.id, g.user_id, u.name, g.zone_id, g.starts_ms, g.ends_ms, g.revoked FROM grants g "
                                 "LEFT JOIN users u ON u.id = g.user_id ORDER BY g.id LIMIT ?", (limit,))
        return [GrantListing(r[0], r[1], r[2], r[3], Window(r[4], r[5], bool(r[6]))) for r in rows]

    def list_cards(self, limit: int) -> list[CardListing]:
        rows = self.conn.execute("SELECT number, name, user_id, devices, starts_ms, ends_ms, revoked FROM cards "
                                 "ORDER BY name LIMIT ?", (limit,))
        return [CardListing(r[0], r[1], r[2], r[3], Window(r[4], r[5], bool(r[6]))) for r in rows]

    def grant(self, grant_id: str) -> GrantListing | None:
        r = self.conn.execute("SELECT g.id, g.user_id, u.name, g.zone_id, g.starts_ms, g.ends_ms, g.revoked FROM grants g "
                              "LEFT JOIN users u ON u.id = g.user_id WHERE g.id = ?", (grant_id,)).fetchone()
        return None if r is None else GrantListing(r[0], r[1], r[2], r[3], Window(r[4], r[5], bool(r[6])))

    def has_card(self, number: str) -> bool:
        return self.conn.execute("SELECT 1 FROM cards WHERE number = ?", (number,)).fetchone() is not None

    def has_jwk(self, kid: str) -> bool:
        return self.conn.execute("SELECT 1 FROM jwks WHERE kid = ?", (kid,)).fetchone() is not None


def count_credentials(path: Path) -> int:
    """Grants plus cards in the cache at `path`, on a read-only connection of its own (the daemon's
    status refresher: it never contends with the decision worker's connection)."""
    import contextlib

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return c.execute("SELECT count(*) FROM grants").fetchone()[0] + c.execute("SELECT count(*) FROM cards").fetchone()[0]


def _tuple(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))
