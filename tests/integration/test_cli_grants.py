"""The grants and events commands as a technician runs them: real processes, real files."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

from tests.support.cli import cli, cli_config, decide_once
from tests.support.harness import Site, door_records
from verifier.types import Reason


def test_standalone_site_keygen_add_revoke_list_and_tail(tmp_path):
    key = tmp_path / "signing.key"
    out = cli("grants", "keygen", "--out", str(key))
    assert out.returncode == 0, out.stderr
    public = out.stdout.split('public_key = "')[1].split('"')[0]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert cli("grants", "keygen", "--out", str(key)).returncode == 1  # never overwrites a key
    config = cli_config(tmp_path, public, key)

    r = cli("grants", "add", "card", "6b:06:c2:a2:5e:99:c6:8e:dc:be", "--devices", "FRONT", "--name", "Guest 101",
            "--until", "2099-01-01T00:00:00", "--config", str(config))
    assert r.returncode == 0 and "cache version 1" in r.stdout, r.stderr
    r = cli("grants", "add", "pin", "pwd-1", "--devices", "FRONT", "--config", str(config), stdin="4711\n")
    assert r.returncode == 0 and "4711" not in r.stdout + r.stderr

    assert asyncio.run(decide_once(config, "6B06C2A25E99C68EDCBE")).granted
    assert asyncio.run(decide_once(config, "4711", hint="pin")).granted

    listing = cli("grants", "list", "--config", str(config))
    assert listing.returncode == 0 and "cache version 2" in listing.stdout
    assert "…DCBE" in listing.stdout and "6B06C2A25E99C68EDCBE" not in listing.stdout
    db = (tmp_path / "state" / "grants.db").read_bytes()
    assert b"4711" not in db, "a PIN is stored in clear"

    r = cli("grants", "revoke", "card", "6B06C2A25E99C68EDCBE", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert asyncio.run(decide_once(config, "6B06C2A25E99C68EDCBE")).reason is Reason.NO_GRANT
    assert len(list((tmp_path / "state" / "bundles").iterdir())) == 3  # the site's signed history

    tail = cli("events", "tail", "-n", "10", "--config", str(config))
    assert tail.returncode == 0
    assert "VERIFY" in tail.stdout and "readerId=FRONT" in tail.stdout and "decision=GRANT" in tail.stdout


def test_import_refuses_tampered_foreign_and_old_bundles_keeping_the_cache(tmp_path):
    site, stranger = Site(), Site()
    config = cli_config(tmp_path, site.public_key)
    good = tmp_path / "v1.bundle"
    now = datetime.now(timezone.utc)
    good.write_bytes(site.bundle(door_records("FRONT", now), now=now, days=3650))
    assert cli("grants", "import", str(good), "--config", str(config)).returncode == 0

    v2 = site.bundle(door_records("FRONT", now) + [{"type": "card", "number": "ABCDEF12", "devices": ["FRONT"]}],
                     now=now, days=3650)
    tampered = tmp_path / "tampered.bundle"
    tampered.write_bytes(v2.replace(b"ABCDEF12", b"ABCDEF13"))
    foreign = tmp_path / "foreign.bundle"
    foreign.write_bytes(stranger.bundle([{"type": "card", "number": "ABCDEF12", "devices": ["FRONT"]}], now=now, days=3650))
    unsigned = tmp_path / "unsigned.bundle"
    unsigned.write_bytes(v2.split(b"\n", 1)[1])
    for path, why in ((tampered, "does not match its signed digest"), (foreign, "does not verify"),
                      (unsigned, "manifest"), (good, "not newer")):
        r = cli("grants", "import", str(path), "--config", str(config))
        assert r.returncode == 1 and why in r.stderr and "stays at version 1" in r.stderr, (path, r.stderr)
    assert asyncio.run(decide_once(config, "6B06C2A25E99C68EDCBE")).granted
    assert asyncio.run(decide_once(config, "ABCDEF12")).reason is Reason.NO_GRANT


def test_standalone_site_adds_door_modes_schedules_holidays_and_role_grants(tmp_path):
    key = tmp_path / "signing.key"
    out = cli("grants", "keygen", "--out", str(key))
    public = out.stdout.split('public_key = "')[1].split('"')[0]
    config = cli_config(tmp_path, public, key)
    assert cli("grants", "add", "zone", "zone_front", "--devices", "FRONT", "--config", str(config)).returncode == 0
    records = "\n".join(json.dumps(r) for r in [
        {"type": "role", "id": "staff"},
        {"type": "user", "id": "u1", "name": "Layla", "roles": ["staff"]},
        {"type": "grant", "id": "g_staff", "roleId": "staff", "zoneId": "zone_front"},
        {"type": "schedule", "id": "always_locked", "default": "locked", "slots": []},
        {"type": "holiday", "id": "h1", "date": "2026-12-25"},
        {"type": "door_mode", "id": "main", "schedule": "always_locked"},
    ])
    r = cli("grants", "add", "record", "-", "--config", str(config), stdin=records)
    assert r.returncode == 0 and "cache version 2" in r.stdout, r.stderr
    r = cli("grants", "add", "card", "0A1B2C3D", "--user", "u1", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert asyncio.run(decide_once(config, "0A1B2C3D")).reason is Reason.DOOR_LOCKED  # the role grant admits; the door is locked
    r = cli("grants", "add", "record", json.dumps({"type": "door_mode", "id": "main", "mode": "card-only"}), "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert asyncio.run(decide_once(config, "0A1B2C3D")).granted
    # A bad record is refused whole, naming the problem; the cache stays as it was.
    bad = cli("grants", "add", "record", json.dumps({"type": "schedule", "id": "s", "slots": [
        {"days": ["mon"], "start": "10:00", "end": "09:00"}]}), "--config", str(config))
    assert bad.returncode == 1 and "end must be after start" in bad.stderr and "stays at version 4" in bad.stderr
    wrong = cli("grants", "add", "record", '{"type": "card"}', "--config", str(config))
    assert wrong.returncode == 2 and "a record of type" in wrong.stderr


def test_a_lost_cache_does_not_reopen_the_door_to_older_bundles(tmp_path):
    """grants.db lost or quarantined: the cache is back at version 0, but the newest version this
    bridge applied with this key is kept beside it, so the older bundle that still lists a card
    revoked since is refused; the current bundle itself may be applied again."""
    site = Site()
    config = cli_config(tmp_path, site.public_key)
    now = datetime.now(timezone.utc)
    card = {"type": "card", "number": "ABCDEF12", "devices": ["FRONT"]}
    old, new = tmp_path / "v1.bundle", tmp_path / "v2.bundle"
    old.write_bytes(site.bundle(door_records("FRONT", now) + [card], now=now, days=3650))
    new.write_bytes(site.bundle(door_records("FRONT", now) + [{**card, "revoked": True}], now=now, days=3650))
    for path in (old, new):
        assert cli("grants", "import", str(path), "--config", str(config)).returncode == 0
    state = tmp_path / "state"
    for name in ("grants.db", "grants.db-wal", "grants.db-shm"):
        (state / name).unlink(missing_ok=True)

    r = cli("grants", "import", str(old), "--config", str(config))
    assert r.returncode == 1 and "older than version 2" in r.stderr and "stays at version 0" in r.stderr, r.stderr
    r = cli("grants", "import", str(new), "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert asyncio.run(decide_once(config, "ABCDEF12")).reason is Reason.GRANT_REVOKED
    assert oct((state / "bundle-floor.json").stat().st_mode & 0o777) == "0o600"


def test_import_after_a_key_rotation_takes_only_the_new_key(tmp_path):
    old_site, new_site = Site(), Site()
    now = datetime.now(timezone.utc)
    config = cli_config(tmp_path, old_site.public_key)
    first = tmp_path / "v1.bundle"
    first.write_bytes(old_site.bundle(door_records("FRONT", now), now=now, days=3650))
    assert cli("grants", "import", str(first), "--config", str(config)).returncode == 0
    config = cli_config(tmp_path, new_site.public_key)  # the site rotates cache.public_key
    stale, fresh = tmp_path / "old-key.bundle", tmp_path / "new-key.bundle"
    stale.write_bytes(old_site.bundle(door_records("FRONT", now), now=now, days=3650))
    new_site.version = 2
    fresh.write_bytes(new_site.bundle(door_records("FRONT", now), now=now, days=3650))
    r = cli("grants", "import", str(stale), "--config", str(config))
    assert r.returncode == 1 and "does not verify" in r.stderr, r.stderr
    r = cli("grants", "import", str(fresh), "--config", str(config))
    assert r.returncode == 0 and "version 3" in r.stdout, r.stderr
