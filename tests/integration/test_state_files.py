"""State files: modes whatever the umask, the fingerprint key, and a clear error for an unusable
audit.db (issue 10, High 1 and the lower items)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from bridge.state.outbox import OutboxOpenError, open_outbox
from bridge.state.files import FINGERPRINT_KEY_NAME, fingerprint_key
from tests.support.harness import Site, door_records, make_config, running
from verifier.credentials import parse
from verifier.types import fingerprint

READER = "R-1"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_files_are_private_whatever_the_umask_and_decisions_use_the_keyed_fingerprint(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a technician's shell
    try:
        state = tmp_path / "state"
        state.mkdir()
        site = Site()
        site.install(state, door_records(READER))
        (state / "grants.db").chmod(0o644)  # as an earlier, careless run left it
        config = make_config(state, site, [])

        async def run() -> list[str]:
            async with running(config) as (daemon, _pins):
                from bridge.inputs.base import Scan
                from verifier.types import Source

                d = await daemon.pipeline.handle(Scan(READER, Source.CARD, b"6B06C2A25E99C68EDCBE", "card"))
                await daemon.quiesce()
                return [d.fingerprint, daemon.parts.outbox.recent(5)[-1].body["credentialFingerprint"]]

        fps = asyncio.run(run())
        key_path = state / FINGERPRINT_KEY_NAME
        assert _mode(key_path) == 0o600 and len(key_path.read_bytes()) == 32
        for name in ("grants.db", "audit.db", "audit.db-wal", "audit.db.hwm"):
            path = state / name
            if path.exists():
                assert _mode(path) & 0o007 == 0, f"{name} is world-accessible: {oct(_mode(path))}"
        key = fingerprint_key(state)
        expected = fingerprint(parse(b"6B06C2A25E99C68EDCBE", "card"), key)
        assert fps == [expected, expected]
        # Restart: the same key, so repeats still link across restarts.
        assert asyncio.run(run()) == [expected, expected] and fingerprint_key(state) == key
    finally:
        os.umask(old)


def test_two_bridges_give_one_card_different_fingerprints(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    card = parse(b"6B06C2A25E99C68EDCBE", "card")
    assert fingerprint(card, fingerprint_key(a)) != fingerprint(card, fingerprint_key(b))


def test_a_damaged_key_file_is_one_clear_error(tmp_path: Path) -> None:
    from bridge.state.files import StateFileError

    (tmp_path / FINGERPRINT_KEY_NAME).write_bytes(b"short")
    with pytest.raises(StateFileError, match="fingerprint.key: the bridge secret is 5 bytes"):
        fingerprint_key(tmp_path)


def test_an_audit_db_that_cannot_be_opened_is_one_line_with_what_to_check(tmp_path: Path) -> None:
    target = tmp_path / "audit.db"
    target.symlink_to(tmp_path / "unmounted" / "audit.db")  # root ignores modes: see below
    with pytest.raises(OutboxOpenError) as err:
        open_outbox(target)
    text = str(err.value)
    assert "\n" not in text and "cannot open the audit log for writing" in text and "ls -l" in text


def test_door_bridge_run_with_an_unusable_audit_db_exits_1_with_one_error_line(tmp_path: Path) -> None:
    """A real `door-bridge run`: no traceback, one line naming the file and what to check."""
    import subprocess
    import sys

    from tests.support.service import ROOT, Pty, write_config

    state = tmp_path / "state"
    state.mkdir()
    site = Site()
    site.install(state, door_records("BRIDGE-svc"))
    # Root ignores file modes, so "read-only" is not testable as root; a link into a directory
    # that does not exist is unusable for everyone (SQLITE_CANTOPEN), and the integrity check
    # does not move it aside.
    (state / "audit.db").symlink_to(tmp_path / "unmounted" / "audit.db")
    pty = Pty()
    try:
        config = tmp_path / "door.toml"
        write_config(config, state, site, pty.path)
        proc = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(config)], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    finally:
        pty.close()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    (line,) = [ln for ln in output.splitlines() if "state_unusable" in ln]
    assert "audit.db" in line and "cannot open the audit log for writing" in line and "ls -l" in line
