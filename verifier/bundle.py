"""Signed grant bundles: the only way grants enter the cache.

A bundle is one file (or HTTP body):

    line 1   the manifest, a compact JWS signed with the central's Ed25519 key (`alg: EdDSA`)
    line 2…  the body: NDJSON records (zones, users, grants, shifts, visitors, cards, passcodes, keys)

The manifest carries `version`, `kind` (full|delta), `base_version` (delta), `issued_at`,
`not_after`, `body_sha256` and `records`. The body is streamed: each line is hashed and applied
inside ONE transaction, and only if the digest and count match the signed manifest at the end is
the transaction committed. A tampered body, a foreign key, a missing signature or an older
version therefore never changes the cache — the previous grants stay in force.

See docs/bundle-format.md for the record schemas (field names follow the seeds).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic_core import from_json

from verifier import door_policy
from verifier.credentials import card_key
from verifier.hashing import PinHashing, hash_invite
from verifier.timeutil import MAX_MS, MIN_MS, TimeFormatError, iso, opt_ms

FORMAT = "door-bridge-bundle/1"
MAX_MANIFEST_BYTES = 16 * 1024
MAX_RECORD_BYTES = 64 * 1024
_BATCH = 2000
_CHUNK = 1 << 20  # bytes of the body read at a time


class BundleRejected(Exception):
    """The bundle was not applied; the cache is exactly as it was. `str()` says why (no secrets)."""


# --- keys ----------------------------------------------------------------------------------------


def load_public_key(text: str) -> Ed25519PublicKey:
    """PEM, or the 32 raw key bytes in base64 / base64url / hex (what fits in a TOML string)."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            raw = _decode_raw32(text)
            key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise ValueError(f"not an Ed25519 public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def _decode_raw32(text: str) -> bytes:
    import base64
    import binascii

    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("neither PEM, hex nor base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 key is 32 bytes")
    return raw


def public_key_text(key: Ed25519PublicKey) -> str:
    import base64

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def generate_signing_key(path: Path) -> Ed25519PrivateKey:
    """A local signing key for standalone sites, written 0600."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


# --- manifest ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    version: int
    kind: str  # "full" | "delta"
    issued_at_ms: int
    not_after_ms: int
    body_sha256: str
    records: int
    base_version: int | None = None
    pin_hashing: PinHashing | None = None
    # Bridge ids this bundle is for; empty: any bridge pinned to the key (docs/bundle-format.md).
    audience: tuple[str, ...] = ()

    def claims(self) -> dict[str, Any]:
        from verifier.timeutil import from_ms

        c: dict[str, Any] = {
            "format": FORMAT, "version": self.version, "kind": self.kind,
            "issued_at": iso(from_ms(self.issued_at_ms)), "not_after": iso(from_ms(self.not_after_ms)),
            "body_sha256": self.body_sha256, "records": self.records,
        }
        if self.base_version is not None:
            c["base_version"] = self.base_version
        if self.pin_hashing is not None:
            c["pin_hash"] = self.pin_hashing.to_claim()
        if self.audience:
            c["audience"] = list(self.audience)
        return c


def read_manifest(token: bytes, public_key: Ed25519PublicKey) -> Manifest:
    """Verify the JWS with the pinned key (EdDSA only: no `alg` confusion) and type-check claims."""
    try:
        claims = jwt.decode(
            token.decode("ascii"), public_key, algorithms=["EdDSA"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except UnicodeDecodeError:
        raise BundleRejected("manifest is not ASCII (not a signed bundle?)") from None
    except jwt.InvalidSignatureError:
        raise BundleRejected("manifest signature does not verify with the pinned public key "
                             "(signed by another central, or tampered)") from None
    except jwt.InvalidTokenError as e:
        raise BundleRejected(f"manifest is not a valid EdDSA-signed JWS: {e}") from None
    try:
        if claims.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        version, records = claims["version"], claims["records"]
        if not (_is_int(version) and version > 0 and _is_int(records) and records >= 0):
            raise ValueError("version/records must be positive integers")
        kind = claims["kind"]
        if kind not in ("full", "delta"):
            raise ValueError("kind must be full or delta")
        base = claims.get("base_version")
        if kind == "delta" and not (_is_int(base) and 0 <= base < version):
            raise ValueError("a delta needs an integer base_version below version")
        sha = claims["body_sha256"]
        if not (isinstance(sha, str) and len(sha) == 64):
            raise ValueError("body_sha256 must be 64 hex digits")
        pin = PinHashing.from_claim(claims["pin_hash"]) if "pin_hash" in claims else None
        audience = claims.get("audience", [])
        if isinstance(audience, str):
            audience = [audience]
        if not (isinstance(audience, list) and len(audience) <= 4096
                and all(isinstance(a, str) and 0 < len(a) <= 256 for a in audience)):
            raise ValueError("audience must be a bridge id or a list of them")
        return Manifest(
            version=version, kind=kind, base_version=base if kind == "delta" else None,
            issued_at_ms=opt_ms(claims["issued_at"], "issued_at", MIN_MS),
            not_after_ms=opt_ms(claims["not_after"], "not_after", MAX_MS),
            body_sha256=sha.lower(), records=records, pin_hashing=pin, audience=tuple(audience),
        )
    except (KeyError, ValueError, TimeFormatError) as e:
        raise BundleRejected(f"manifest claims are invalid: {e}") from None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --- writing (central, standalone sites, demo, tests, benchmarks) --------------------------------


class BundleWriter:
    """Streams records to a temporary body, then signs a manifest over its digest.

    Memory stays flat however many records are written, so a producer on a Pi can make a
    million-grant bundle.
    """

    def __init__(self, *, version: int, kind: str = "full", base_version: int | None = None,
                 issued_at: datetime, not_after: datetime, pin_hashing: PinHashing | None = None,
                 audience: Iterable[str] = ()) -> None:
        self._body = tempfile.TemporaryFile()
        self._sha = hashlib.sha256()
        self._count = 0
        self._meta = dict(version=version, kind=kind, base_version=base_version,
                          issued_at=issued_at, not_after=not_after, pin_hashing=pin_hashing,
                          audience=tuple(audience))

    def add(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        self._sha.update(line)
        self._body.write(line)
        self._count += 1

    def add_all(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.add(r)

    def finish(self, signing_key: Ed25519PrivateKey, out: IO[bytes]) -> Manifest:
        from verifier.timeutil import to_ms

        m = self._meta
        manifest = Manifest(
            version=m["version"], kind=m["kind"], base_version=m["base_version"],
            issued_at_ms=to_ms(m["issued_at"]), not_after_ms=to_ms(m["not_after"]),
            body_sha256=self._sha.hexdigest(), records=self._count, pin_hashing=m["pin_hashing"],
            audience=m["audience"],
        )
        token = jwt.encode(manifest.claims(), signing_key, algorithm="EdDSA", headers={"typ": "door-bridge-bundle+jws"})
        out.write(token.encode() + b"\n")
        self._body.seek(0)
        while chunk := self._body.read(1 << 20):
            out.write(chunk)
        self._body.close()
        return manifest

    def write_file(self, signing_key: Ed25519PrivateKey, path: Path) -> Manifest:
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:
            manifest = self.finish(signing_key, f)
        os.replace(tmp, path)
        return manifest


# --- applying ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ApplyResult:
    version: int
    kind: str
    records: int
    not_after_ms: int
    body_sha256: str = ""


@dataclass(frozen=True, slots=True)
class _Insert:
    """An upsert into one table, and which of its columns the bundle's deletes select on."""

    sql: str
    table: str
    keys: tuple[tuple[str, int], ...]  # (column, index in the row)


@dataclass(frozen=True, slots=True)
class _Delete:
    sql: str
    table: str
    column: str


def _delete_stmt(table: str, column: str) -> _Delete:
    return _Delete(f"DELETE FROM {table} WHERE {column} = ?", table, column)


class _Pending:
    """One table's waiting writes: deletes (which commute with each other), then upserts in order."""

    __slots__ = ("deletes", "upserts", "keys")

    def __init__(self) -> None:
        self.deletes: dict[str, list[tuple[Any, ...]]] = {}
        self.upserts: list[tuple[str, list[tuple[Any, ...]]]] = []  # runs of one statement, in order
        self.keys: dict[str, set[Any]] = {}  # column -> values the waiting upserts write there


class _Batches:
    """Batches a bundle's writes with `executemany` while keeping the effect of applying them one
    by one (tests/unit/test_bundle_batching.py compares the two on random record sequences).

    Tables share no triggers and foreign keys are off, so only the order within a table matters.
    A waiting delete runs before the table's waiting upserts, which is the order they came in
    unless an upsert of the same key came first: then the table is written out before the
    delete waits. Before, every delete wrote out every table, and a million-grant bundle (one
    roles delete per user) ran `executemany` with one or two rows 2.2 M times. A table a full
    bundle has just emptied, and nothing has written since, has nothing to delete."""

    def __init__(self, conn: sqlite3.Connection, emptied: Iterable[str] = ()) -> None:
        self.conn = conn
        self.tables: dict[str, _Pending] = {}
        self.size = 0
        self.empty = set(emptied)

    def _pending(self, table: str) -> _Pending:
        pending = self.tables.get(table)
        if pending is None:
            pending = self.tables[table] = _Pending()
        return pending

    def add(self, stmt: _Insert, row: tuple[Any, ...]) -> None:
        # Called once a row (2.2 M times in a 1M-grant apply): written out flat, without the
        # helper calls and the `setdefault(column, set())` that built a set to throw away each time.
        table = stmt.table
        if table in self.empty:
            self.empty.discard(table)
        pending = self.tables.get(table) or self._pending(table)
        runs = pending.upserts
        if runs and runs[-1][0] is stmt.sql:
            runs[-1][1].append(row)
        else:
            runs.append((stmt.sql, [row]))
        for column, index in stmt.keys:
            seen = pending.keys.get(column)
            if seen is None:
                seen = pending.keys[column] = set()
            seen.add(row[index])
        self.size += 1
        if self.size >= _BATCH:
            self.flush()

    def delete(self, stmt: _Delete, value: Any) -> None:
        if stmt.table in self.empty:
            return
        pending = self._pending(stmt.table)
        if value in pending.keys.get(stmt.column, ()):
            self._write(pending)
        pending.deletes.setdefault(stmt.sql, []).append((value,))
        self.size += 1
        if self.size >= _BATCH:
            self.flush()

    def _write(self, pending: _Pending) -> None:
        for sql, rows in pending.deletes.items():
            self.conn.executemany(sql, rows)
            self.size -= len(rows)
        for sql, rows in pending.upserts:
            self.conn.executemany(sql, rows)
            self.size -= len(rows)
        pending.deletes.clear()
        pending.upserts.clear()
        pending.keys.clear()

    def flush(self) -> None:
        for pending in self.tables.values():
            self._write(pending)


_TABLES = ("zones", "zone_readers", "known_readers", "users", "grants", "shifts", "cards", "visitors", "passcodes", "jwks",
           "roles", "user_roles", "role_grants", "schedules", "holidays", "door_modes")


def apply_bundle(conn: sqlite3.Connection, stream: IO[bytes], public_key: Ed25519PublicKey,
                 floor: VersionFloor | None = None, *, audience: Iterable[str] | None = None) -> ApplyResult:
    """Verify and apply a bundle from `stream` in one transaction. Raises BundleRejected.

    `audience`: the bridge ids this bridge answers to; a bundle whose signed audience names none
    of them is refused (so is one with an audience when the caller names none).

    `floor` is the newest bundle this bridge ever applied with this key, kept outside the cache
    file, so a lost or quarantined grants.db does not reopen the door to older signed bundles."""
    first = stream.readline(MAX_MANIFEST_BYTES + 1)
    if not first.endswith(b"\n") or len(first) > MAX_MANIFEST_BYTES:
        raise BundleRejected("no signed manifest line at the start of the bundle (missing signature?)")
    manifest = read_manifest(first.strip(), public_key)
    check_audience(manifest, audience)
    sha = hashlib.sha256()
    count = 0
    # The version checks read the cache inside the write transaction: checked before it, another
    # applier (a `grants import` during a sync) could commit in between and be overwritten by an
    # older bundle that was only newer than what this one saw.
    conn.execute("BEGIN IMMEDIATE")
    try:
        pin = _check_order(manifest, read_meta(conn), floor)
        emptied: tuple[str, ...] = ()
        if manifest.kind == "full":
            for table in _TABLES:
                conn.execute(f"DELETE FROM {table}")
            emptied = _TABLES
        batches = _Batches(conn, emptied)
        try:
            for line_no, line in enumerate(_lines(stream, sha), start=2):
                count += 1
                _apply_line(batches, line, line_no, pin)
            batches.flush()
        except UnicodeEncodeError:
            # JSON can spell a lone surrogate (\ud800) that no UTF-8 database can store.
            raise BundleRejected(f"a record near line {count + 1} holds text that is not valid Unicode") from None
        if sha.hexdigest() != manifest.body_sha256 or count != manifest.records:
            raise BundleRejected("bundle body does not match its signed digest (tampered or truncated)")
        _write_meta(conn, manifest, pin)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return ApplyResult(manifest.version, manifest.kind, count, manifest.not_after_ms, manifest.body_sha256)


def apply_file(conn: sqlite3.Connection, path: Path, public_key: Ed25519PublicKey,
               floor: VersionFloor | None = None, *, audience: Iterable[str] | None = None) -> ApplyResult:
    with open(path, "rb") as f:
        return apply_bundle(conn, f, public_key, floor, audience=audience)


def check_audience(manifest: Manifest, audience: Iterable[str] | None) -> None:
    """A bundle addressed to other bridges never applies here, even signed by the pinned key."""
    if not manifest.audience:
        return
    names = set(audience or ())
    if not names.intersection(manifest.audience):
        shown = ", ".join(manifest.audience[:3]) + (" …" if len(manifest.audience) > 3 else "")
        raise BundleRejected(f"bundle is addressed to {shown}, not to this bridge "
                             f"({', '.join(sorted(names)) or 'no bridge id given'})")


@dataclass(frozen=True, slots=True)
class VersionFloor:
    """The newest bundle applied before: its version and body digest (the same bundle may be
    applied again into an empty cache after a re-sync; another one of that version may not)."""

    version: int
    body_sha256: str


def _check_order(manifest: Manifest, meta: dict[str, str], floor: VersionFloor | None) -> PinHashing | None:
    """Anti-rollback and delta base checks; the PIN hashing the bundle's records use."""
    current = int(meta.get("version", "0"))
    if manifest.version <= current:
        raise BundleRejected(f"bundle version {manifest.version} is not newer than the cache's {current} (rollback refused)")
    if floor is not None and (manifest.version < floor.version or
                              (manifest.version == floor.version and manifest.body_sha256 != floor.body_sha256)):
        raise BundleRejected(f"bundle version {manifest.version} is older than version {floor.version}, which this bridge "
                             "already applied with this key (rollback refused; the cache file was replaced or lost)")
    if manifest.kind == "delta":
        if manifest.base_version != current:
            raise BundleRejected(f"delta from version {manifest.base_version} does not apply to cache version {current}; a full bundle is needed")
        if manifest.pin_hashing and _meta_pin(meta) and manifest.pin_hashing != _meta_pin(meta):
            raise BundleRejected("a delta cannot change the PIN hashing salt; send a full bundle")
        return manifest.pin_hashing or _meta_pin(meta)
    return manifest.pin_hashing


def _lines(stream: IO[bytes], sha: Any) -> Iterator[bytes]:
    """The body's records (without their newline), hashed into `sha` as they are read.

    A megabyte at a time, split in C: a `readline` and a digest update per record were 0.4 us of
    the 4 us of Python a record of a 1M-grant apply costs. A record still never exceeds
    MAX_RECORD_BYTES in memory beyond one chunk, however long the line the central sent."""
    carry = b""
    while chunk := stream.read(_CHUNK):
        sha.update(chunk)
        lines = chunk.split(b"\n")
        if carry:
            lines[0] = carry + lines[0]
        carry = lines.pop()
        if len(carry) > MAX_RECORD_BYTES or (lines and max(map(len, lines)) > MAX_RECORD_BYTES):
            raise BundleRejected(f"a record is longer than {MAX_RECORD_BYTES} bytes")
        yield from lines
    if carry:
        yield carry


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _meta_pin(meta: dict[str, str]) -> PinHashing | None:
    return PinHashing.from_claim(json.loads(meta["pin_hash"])) if "pin_hash" in meta else None


def _write_meta(conn: sqlite3.Connection, m: Manifest, pin: PinHashing | None) -> None:
    rows = {
        "version": str(m.version), "kind": m.kind, "issued_at_ms": str(m.issued_at_ms),
        "not_after_ms": str(m.not_after_ms), "body_sha256": m.body_sha256,
    }
    if pin is not None:
        rows["pin_hash"] = json.dumps(pin.to_claim())
    conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows.items())


# --- records -------------------------------------------------------------------------------------


class _Bad(Exception):
    pass


def _apply_line(b: _Batches, line: bytes, line_no: int, pin: PinHashing | None) -> None:
    try:
        # pydantic-core's parser (jiter), not json.loads: 1.7-2.2 against 3.8-4.3 us a record of
        # bench/sync.py's mix, a third of the Python work of a record in a 1M apply. It reads
        # UTF-8 only, and refuses a lone surrogate (no UTF-8 database can store one) and nesting
        # past 200 with a ValueError (tests/unit/test_bundle_json.py holds both parsers to the
        # same answers).
        rec = from_json(line)
        if not isinstance(rec, dict):
            raise _Bad("not a JSON object")
        kind = rec.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise _Bad(f"unknown record type {str(kind)[:32]!r}")
        op = rec.get("op", "upsert")  # an explicit null is neither
        if op == "upsert":
            handler(b, rec, pin)
        elif op == "delete":
            _delete(b, kind, rec)
        else:
            raise _Bad("op must be upsert or delete")
    except (ValueError, _Bad, TimeFormatError) as e:
        raise BundleRejected(f"record on line {line_no} is invalid: {e}") from None


def _req(rec: dict[str, Any], key: str) -> str:
    """`_str(rec, key)`, with the common case first: the handlers call it millions of times in a
    big apply, and a call with keyword arguments costs more than the check itself."""
    v = rec.get(key)
    if type(v) is str and 0 < len(v) <= 256:
        return v
    return _str(rec, key)  # type: ignore[return-value]  # raises: required


def _opt(rec: dict[str, Any], key: str) -> str | None:
    """`_str(rec, key, required=False)`, common case first (see `_req`)."""
    v = rec.get(key)
    if v is None or (type(v) is str and 0 < len(v) <= 256):
        return v
    return _str(rec, key, required=False)


def _str(rec: dict[str, Any], key: str, *, required: bool = True, max_len: int = 256) -> str | None:
    v = rec.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise _Bad(f"{key} must be a non-empty string of at most {max_len} characters")
    return v


def _bool(rec: dict[str, Any], key: str, default: bool) -> int:
    v = rec.get(key, default)
    if v is True:
        return 1
    if v is False:
        return 0
    raise _Bad(f"{key} must be true or false")


def _str_list(rec: dict[str, Any], key: str, *, required: bool) -> list[str] | None:
    v = rec.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v) or len(v) > 4096:
        raise _Bad(f"{key} must be a list of strings")
    return v


# Window edges already parsed in this process: a bundle repeats them (a site's far end date,
# check-out times, day boundaries), and parsing one costs more than the rest of its record.
_INSTANTS: dict[str, int] = {}
_INSTANTS_MAX = 65536


def _instant(rec: dict[str, Any], key: str, default: int) -> int:
    value = rec.get(key)
    if type(value) is not str:
        return opt_ms(value, key, default)
    ms = _INSTANTS.get(value)
    if ms is None:
        ms = opt_ms(value, key, default)
        if len(_INSTANTS) >= _INSTANTS_MAX:
            _INSTANTS.clear()
        _INSTANTS[value] = ms
    return ms


def _window(rec: dict[str, Any], start: str, end: str) -> tuple[int, int]:
    s, e = _instant(rec, start, MIN_MS), _instant(rec, end, MAX_MS)
    if e <= s:
        raise _Bad(f"{end} must be after {start}")
    return s, e


def _json_or_none(v: list[str] | None) -> str | None:
    return None if v is None else json.dumps(v, separators=(",", ":"))


# Every delete a bundle can cause, by table and the column it selects on.
_DEL_ZONE, _DEL_ZONE_READERS = _delete_stmt("zones", "id"), _delete_stmt("zone_readers", "zone_id")
_DEL_USER, _DEL_USER_ROLES = _delete_stmt("users", "id"), _delete_stmt("user_roles", "user_id")
_DEL_GRANT, _DEL_ROLE_GRANT = _delete_stmt("grants", "id"), _delete_stmt("role_grants", "id")
_DEL_ROLE, _DEL_ROLE_HOLDERS = _delete_stmt("roles", "id"), _delete_stmt("user_roles", "role_id")


def _upsert(table: str, columns: str, verb: str = "INSERT OR REPLACE") -> _Insert:
    names = [c.strip() for c in columns.split(",")]
    keys = tuple((c, i) for i, c in enumerate(names) if c in _DELETE_COLUMNS.get(table, ()))
    return _Insert(f"{verb} INTO {table}({', '.join(names)}) VALUES ({','.join('?' * len(names))})", table, keys)


_DELETES: dict[str, tuple[str, list[_Delete]]] = {
    "zone": ("id", [_DEL_ZONE, _DEL_ZONE_READERS]),
    "user": ("id", [_DEL_USER, _DEL_USER_ROLES]),
    "grant": ("id", [_DEL_GRANT, _DEL_ROLE_GRANT]),
    "role": ("id", [_DEL_ROLE, _DEL_ROLE_HOLDERS]),
    "schedule": ("id", [_delete_stmt("schedules", "id")]),
    "holiday": ("id", [_delete_stmt("holidays", "id")]),
    "door_mode": ("id", [_delete_stmt("door_modes", "id")]),
    "shift": ("id", [_delete_stmt("shifts", "id")]),
    "card": ("number", [_delete_stmt("cards", "number")]),
    "ic_card": ("cardNumber", [_delete_stmt("cards", "number")]),
    "visitor": ("id", [_delete_stmt("visitors", "id")]),
    "passcode": ("id", [_delete_stmt("passcodes", "id")]),
    "key": ("kid", [_delete_stmt("jwks", "kid")]),
}
_DELETE_COLUMNS: dict[str, set[str]] = {}
for _d in (d for _, stmts in _DELETES.values() for d in stmts):
    _DELETE_COLUMNS.setdefault(_d.table, set()).add(_d.column)

_UP_ZONE = _upsert("zones", "id, name, schedule_aware")
_UP_ZONE_READER = _upsert("zone_readers", "reader_id, zone_id")
_UP_KNOWN = _upsert("known_readers", "reader_id", "INSERT OR IGNORE")
_UP_USER = _upsert("users", "id, name, active")
_UP_USER_ROLE = _upsert("user_roles", "user_id, role_id", "INSERT OR IGNORE")
_UP_ROLE_GRANT = _upsert("role_grants", "id, role_id, zone_id, starts_ms, ends_ms, revoked, schedule_id")
_UP_GRANT = _upsert("grants", "id, user_id, zone_id, starts_ms, ends_ms, revoked, schedule_id")
_UP_SHIFT = _upsert("shifts", "id, user_id, zone_id, starts_ms, ends_ms")
_UP_CARD = _upsert("cards", "number, name, user_id, devices, starts_ms, ends_ms, revoked, origin")
_UP_VISITOR = _upsert("visitors", "code_sha256, id, name, zone_ids, starts_ms, ends_ms, revoked")
_UP_PASSCODE = _upsert("passcodes", "id, pin_hash, name, user_id, devices, starts_ms, ends_ms, revoked")
_UP_KEY = _upsert("jwks", "kid, jwk")
_UP_ROLE = _upsert("roles", "id, name, override")
_UP_SCHEDULE = _upsert("schedules", "id, body")
_UP_HOLIDAY = _upsert("holidays", "id, body")
_UP_DOOR_MODE = _upsert("door_modes", "id, body")


def _zone(b: _Batches, r: dict[str, Any], _: Any) -> None:
    zid = _req(r, "id")
    readers = _str_list(r, "readers", required=False) or []
    b.add(_UP_ZONE, (zid, _opt(r, "name"), _bool(r, "scheduleAware", False)))
    b.delete(_DEL_ZONE_READERS, zid)
    for reader in readers:
        b.add(_UP_ZONE_READER, (reader, zid))
    _known(b, readers)


def _known(b: _Batches, readers: list[str] | None) -> None:
    for reader in readers or ():
        b.add(_UP_KNOWN, (reader,))


def _user(b: _Batches, r: dict[str, Any], _: Any) -> None:
    uid = _req(r, "id")
    b.add(_UP_USER, (uid, _opt(r, "name"), _bool(r, "active", True)))
    # An upsert replaces the holder's roles: a role left out is removed at once (door_policy.py).
    b.delete(_DEL_USER_ROLES, uid)
    for role in _str_list(r, "roles", required=False) or ():
        b.add(_UP_USER_ROLE, (uid, role))


def _grant(b: _Batches, r: dict[str, Any], _: Any) -> None:
    """Frontelio: "A Grant ties a User (or a Role) to a Zone" — `userId` or `roleId`, not both."""
    s, e = _window(r, "startsAt", "endsAt")
    user, role = _opt(r, "userId"), _opt(r, "roleId")
    if (user is None) == (role is None):
        raise _Bad("a grant needs exactly one of userId and roleId")
    gid, schedule = _req(r, "id"), _opt(r, "schedule")
    if role is not None:
        b.delete(_DEL_GRANT, gid)
        b.add(_UP_ROLE_GRANT, (gid, role, _req(r, "zoneId"), s, e, _bool(r, "revoked", False), schedule))
        return
    b.add(_UP_GRANT, (gid, user, _req(r, "zoneId"), s, e, _bool(r, "revoked", False), schedule))


def _shift(b: _Batches, r: dict[str, Any], _: Any) -> None:
    s, e = _window(r, "startsAt", "endsAt")
    b.add(_UP_SHIFT, (_req(r, "id"), _req(r, "userId"), _opt(r, "zoneId"), s, e))


def _card_number(value: str | None, key: str) -> str:
    norm = card_key(value or "")
    if norm is None:
        raise _Bad(f"{key} is not a card number")
    return norm


def _card(b: _Batches, r: dict[str, Any], _: Any) -> None:
    """SNA spelling: `number`, `name`, `devices`, `start_at`, `end_at` (+ `userId` to link a user)."""
    s, e = _window(r, "start_at", "end_at")
    user, devices = _opt(r, "userId"), _str_list(r, "devices", required=False)
    if user is None and devices is None:
        raise _Bad("a card needs userId (zone grants apply) or devices (bound to readers)")
    _known(b, devices)
    b.add(_UP_CARD, (_card_number(_str(r, "number", max_len=64), "number"), _opt(r, "name"), user,
           _json_or_none(devices), s, e, _bool(r, "revoked", False), "sna"))


def _ic_card(b: _Batches, r: dict[str, Any], _: Any) -> None:
    """Sifely spelling: `cardNumber`, `cardName`, `startDate`, `endDate`, bound to `devices`."""
    s, e = _window(r, "startDate", "endDate")
    devices = _str_list(r, "devices", required=True)
    _known(b, devices)
    b.add(_UP_CARD, (_card_number(_str(r, "cardNumber", max_len=64), "cardNumber"), _opt(r, "cardName"),
           _opt(r, "userId"), _json_or_none(devices),
           s, e, _bool(r, "revoked", False), "sifely"))


def _visitor(b: _Batches, r: dict[str, Any], _: Any) -> None:
    """Frontelio spelling: `inviteCode` (hashed here) or `inviteCodeSha256`, `zoneIds`, `validFrom`/`validUntil`."""
    s, e = _window(r, "validFrom", "validUntil")
    code = _opt(r, "inviteCode")
    digest = hash_invite(code) if code else _str(r, "inviteCodeSha256", required=False)
    if not digest or len(digest) != 64:
        raise _Bad("a visitor needs inviteCode or inviteCodeSha256")
    b.add(_UP_VISITOR, (digest.lower(), _opt(r, "id") or digest[:16], _opt(r, "displayName"),
           _json_or_none(_str_list(r, "zoneIds", required=True)), s, e, _bool(r, "revoked", False)))


def _passcode(b: _Batches, r: dict[str, Any], pin: PinHashing | None) -> None:
    """Sifely spelling: `keyboardPwdName`, `startDate`, `endDate`; the PIN itself only as a hash."""
    if pin is None:
        raise _Bad("passcodes need the manifest's pin_hash parameters")
    digest = _str(r, "keyboardPwdHash", max_len=128)
    s, e = _window(r, "startDate", "endDate")
    devices = _str_list(r, "devices", required=True)
    _known(b, devices)
    b.add(_UP_PASSCODE, (_req(r, "id"), digest, _opt(r, "keyboardPwdName"), _opt(r, "userId"),
           _json_or_none(devices), s, e, _bool(r, "revoked", False)))


def _key(b: _Batches, r: dict[str, Any], _: Any) -> None:
    jwk = r.get("jwk")
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
        raise _Bad("jwk must be a JWK object")
    b.add(_UP_KEY, (_req(r, "kid"), json.dumps(jwk)))


def _role(b: _Batches, r: dict[str, Any], _: Any) -> None:
    b.add(_UP_ROLE, (_req(r, "id"), _opt(r, "name"), _bool(r, "override", False)))


def _schedule(b: _Batches, r: dict[str, Any], _: Any) -> None:
    b.add(_UP_SCHEDULE, (_req(r, "id"), json.dumps(door_policy.check_schedule(r))))


def _holiday(b: _Batches, r: dict[str, Any], _: Any) -> None:
    b.add(_UP_HOLIDAY, (_req(r, "id"), json.dumps(door_policy.check_holiday(r))))


def _door_mode(b: _Batches, r: dict[str, Any], _: Any) -> None:
    body = door_policy.check_door_mode(r)
    _known(b, body.get("readers"))
    b.add(_UP_DOOR_MODE, (_req(r, "id"), json.dumps(body)))


_HANDLERS = {
    "role": _role, "schedule": _schedule, "holiday": _holiday, "door_mode": _door_mode,
    "zone": _zone, "user": _user, "grant": _grant, "shift": _shift, "card": _card,
    "ic_card": _ic_card, "visitor": _visitor, "passcode": _passcode, "key": _key,
}

def _delete(b: _Batches, kind: str, r: dict[str, Any]) -> None:
    key, statements = _DELETES[kind]
    value = _str(r, key, max_len=256)
    if kind in ("card", "ic_card"):
        value = _card_number(value, key)
    for stmt in statements:
        b.delete(stmt, value)


def bundle_bytes(records: Iterable[dict[str, Any]], signing_key: Ed25519PrivateKey, **manifest: Any) -> bytes:
    """Convenience for small bundles (tests, demo)."""
    w = BundleWriter(**manifest)
    w.add_all(records)
    out = io.BytesIO()
    w.finish(signing_key, out)
    return out.getvalue()
