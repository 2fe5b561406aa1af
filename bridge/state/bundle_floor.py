"""The newest signed bundle this bridge applied, kept beside grants.db rather than inside it.

Anti-rollback compares a bundle's version with the cache's. When grants.db is lost, quarantined
after corruption, or swapped, the cache's version is back at 0 and any older signed bundle — one
that still lists a card revoked since — would apply again. This file remembers the highest
version (and its body digest) per pinned key, so after a re-sync only that bundle or a newer one
is accepted. A new pinned key starts a new history (the documented way to reset on purpose).
"""

from __future__ import annotations

from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.state.json_file import read_json, write_json
from verifier.bundle import ApplyResult, VersionFloor, public_key_text

log = structlog.get_logger()

FILE = "bundle-floor.json"


def load(state_dir: Path, public_key: Ed25519PublicKey) -> VersionFloor | None:
    path = state_dir / FILE
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        # Unreadable: the cache's own version check still holds; say so rather than stop updates.
        log.error("bundle_floor_unreadable", file=str(path), error=str(e),
                  check="the state directory's disk; the file is rewritten at the next applied bundle")
        return None
    if data is None or data.get("key") != public_key_text(public_key):
        return None
    version, sha = data.get("version"), data.get("body_sha256")
    if not isinstance(version, int) or not isinstance(sha, str):
        return None
    return VersionFloor(version, sha)


def record(state_dir: Path, public_key: Ed25519PublicKey, applied: ApplyResult) -> None:
    current = load(state_dir, public_key)
    if current is not None and current.version >= applied.version:
        return
    write_json(state_dir / FILE, {"key": public_key_text(public_key), "version": applied.version,
                                  "body_sha256": applied.body_sha256})
