"""A writer of systemd-journald's native protocol, so log lines carry fields a technician can
filter on (`journalctl -u door-bridge READER_ID=R1 REASON=OUT_OF_DATE_WINDOW`).

Why our own ~40 lines and not a library: `systemd.journal` (python3-systemd, Debian's) and
cysystemd both bind libsystemd in C. In the project's venv the first is only importable with
--system-site-packages on a Debian host, and either one from PyPI needs a compiler and
libsystemd-dev at install time — a door Pi should not build C to log. The protocol itself is
documented and stable (systemd.io/JOURNAL_NATIVE_PROTOCOL): one datagram to
/run/systemd/journal/socket of `KEY=value\\n` lines, with a length-prefixed form for values that
contain a newline. We send only small entries (one log line), so the memfd path for entries above
the datagram limit is not needed: an entry that does not fit is refused and falls back to stderr.
Tested against a real systemd-journald (tests/integration/test_journal.py).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Far below the kernel's default datagram limit for AF_UNIX (~208 KiB); a log line is < 4 KiB.
MAX_ENTRY_BYTES = 64 * 1024


def encode(fields: Mapping[str, str]) -> bytes:
    """Field names are upper case, digits and `_` (the caller's job); values any UTF-8."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def under_journal(stream_fd: int = 2) -> bool:
    """systemd's contract: JOURNAL_STREAM=<dev>:<ino> names the stream our stderr is connected to.
    A process whose stderr was redirected elsewhere (a shell pipe) is not logging to the journal."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream_fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalWriter:
    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)  # a stuck journald must never stop a decision
        self.failures = 0

    def send(self, fields: Mapping[str, str]) -> bool:
        """True when journald took the entry; False (the caller writes stderr instead) otherwise."""
        data = encode(fields)
        if len(data) > MAX_ENTRY_BYTES:
            return False
        try:
            self._sock.sendto(data, self.path)
        except OSError:
            self.failures += 1
            return False
        return True

    def close(self) -> None:
        self._sock.close()
