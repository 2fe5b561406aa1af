"""The unit's `SystemCallFilter=` as the kernel applies it, around a process the tests start.

systemd turns the unit's lines into one seccomp allow-list (the first line sets it, a `~` line
removes from it, a later plain line adds back) and answers every other system call with
`SystemCallErrorNumber=` (EPERM). Here the same list is built from the unit file, with the groups
expanded by `systemd-analyze syscall-filter` (the host's systemd: Debian 12's 252, as in the
guest), and loaded through libseccomp (systemd's own library) before exec:

    python -m tests.support.unit_seccomp systemd/door-bridge.service -- python -m bridge.cli run …

Why not only the guest: the guest runs the real unit but one configuration; this runs any test
daemon (and all the children it starts, which inherit the filter) under the unit's filter on the
CI host in seconds. It is the filter alone: no other sandbox option is applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "door-bridge.service"
SCMP_ACT_ALLOW = 0x7FFF0000
EPERM = 1


def scmp_act_errno(errno: int) -> int:
    return 0x00050000 | (errno & 0xFFFF)


@functools.cache
def expand(name: str) -> frozenset[str]:
    """A syscall name as itself; a `@group` as every syscall in it, nested groups included."""
    if not name.startswith("@"):
        return frozenset({name})
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise RuntimeError("systemd-analyze not found: .ci/run installs the systemd package")
    out = subprocess.run([analyze, "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:  # the first line is the group's own name
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= expand(entry)
    return frozenset(names)


def allowed_syscalls(unit: Path = UNIT) -> frozenset[str]:
    allowed: set[str] | None = None
    for line in unit.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1].strip()
        negate = value.startswith("~")
        names = frozenset().union(*(expand(n) for n in value.lstrip("~").split()))
        if allowed is None:
            if negate:
                raise ValueError(f"{unit}: a deny-list filter first is not what this helper models")
            allowed = set(names)
        elif negate:
            allowed -= names
        else:
            allowed |= names
    if allowed is None:
        raise ValueError(f"{unit}: no SystemCallFilter=")
    return frozenset(allowed)


def load_filter(allowed: frozenset[str]) -> None:
    """Install the allow-list on this process (no-new-privileges set, as systemd sets it)."""
    path = ctypes.util.find_library("seccomp")
    if path is None:
        raise RuntimeError("libseccomp not found (Debian: libseccomp2, a dependency of systemd)")
    lib = ctypes.CDLL(path, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(scmp_act_errno(EPERM))
    if not ctx:
        raise RuntimeError("seccomp_init failed")
    for name in sorted(allowed):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not a system call of this architecture (systemd skips it too)
        lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def command(argv: list[str], unit: Path = UNIT) -> list[str]:
    """`argv` run under the unit's system call filter."""
    return [sys.executable, "-m", "tests.support.unit_seccomp", str(unit), "--", *argv]


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m tests.support.unit_seccomp UNIT -- COMMAND…", file=sys.stderr)
        return 2
    load_filter(allowed_syscalls(Path(args[0])))
    os.execvp(args[2], args[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
