"""Small JSON state files in the state directory: written whole or not at all, 0600 whatever the umask.

A power cut must leave either the old or the new content (write a temporary file, fsync it,
rename it over, fsync the directory so the rename itself is durable), and the files can say
what a thief or another local user should not read (versions, cursors), so they are created
owner-only rather than left to the umask.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in `path`; None when the file is missing. Raises ValueError when it is not a
    JSON object (the caller decides whether that is fatal or a fresh start)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data
