"""Files in the state directory: who may read them, and the bridge's own secrets.

The state directory holds the grant cache (who may open which door), the audit log (who opened
it) and per-bridge secrets. Run by hand with the usual umask 022 everything SQLite or Python
creates would be world-readable, so every entry point narrows the process umask first
(`restrict_umask`) and the files that exist already are tightened (`tighten`): modes no longer
depend on who started the daemon or how. The systemd unit sets `UMask=0027` too; this is the
same rule for a technician's shell.

Secrets (`fingerprint.key`) are created 0600 and atomically: written whole to a temporary file,
fsync'd, then linked into place, so a power cut leaves either no key or the whole key, and two
processes starting at once end up with the same one.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

# Group may read the databases (an admin group for `events tail`), nobody else may.
DB_MODE = 0o640
SECRET_MODE = 0o600
DIR_MODE = 0o750
UMASK_BITS = 0o027

FINGERPRINT_KEY_NAME = "fingerprint.key"
FINGERPRINT_KEY_BYTES = 32


class StateFileError(Exception):
    """A state file cannot be used. `str()` is one line: the file, what is wrong, what to check."""


def restrict_umask() -> None:
    """Never create a group-writable or world-accessible file, whatever umask we were started with."""
    current = os.umask(0)
    os.umask(current | UMASK_BITS)


def ensure_state_dir(state_dir: Path) -> None:
    if not state_dir.exists():
        state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def tighten(path: Path, mode: int = DB_MODE) -> None:
    """Drop permission bits beyond `mode` from `path` and its SQLite companions, if they exist."""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        with contextlib.suppress(FileNotFoundError):
            current = stat.S_IMODE(p.stat().st_mode)
            if current & ~mode:
                with contextlib.suppress(PermissionError):  # not ours to change: doctor says so
                    p.chmod(current & mode)


def load_or_create_secret(path: Path, size: int = FINGERPRINT_KEY_BYTES) -> bytes:
    """The secret in `path` (created with `size` random bytes if absent). Never logged."""
    try:
        return _read_secret(path, size)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    try:
        os.fchmod(fd, SECRET_MODE)  # the umask may have taken bits away, never added: be exact
        os.write(fd, os.urandom(size))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: then theirs is the key
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return _read_secret(path, size)


def fingerprint_key(state_dir: Path) -> bytes:
    """The bridge's credential-fingerprint key (see `verifier.types.fingerprint`)."""
    return load_or_create_secret(Path(state_dir) / FINGERPRINT_KEY_NAME)


def _read_secret(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(size + 1)
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StateFileError(f"{path}: cannot read the bridge secret: {e.strerror}; "
                             f"check: `ls -l {path}` (owned by the service user, mode 0600)") from None
    if len(data) != size:
        raise StateFileError(f"{path}: the bridge secret is {len(data)} bytes, not {size} (damaged or not ours); "
                             f"check: restore it from a backup, or delete it to start new fingerprints "
                             f"(older journal lines then no longer link to new ones)")
    if mode & 0o077:
        with contextlib.suppress(PermissionError):
            path.chmod(SECRET_MODE)
    return data


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
