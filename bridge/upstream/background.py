"""Background children (the bundle download, the bundle apply) that yield the CPU from their first
instruction.

Decisions and a sync share the Pi's cores: a child's interpreter start and imports (httpx,
pydantic, cryptography: a few hundred ms of CPU) and its work compete with the decision thread,
and bench/sync.py saw the decisions' p99 rise from ~140 µs to ~2.3 ms while the download child
ran (load 4). A child that lowers its own priority once its module is running (as the applier
did) has already spent its start-up at the daemon's priority. So the command is a bootstrap that
sets the niceness first and then runs the module as `python -m` would (runpy, `__main__`,
sys.argv[0] the module's file): everything the child does, imports included, runs niced. A
`preexec_fn` would do the same but makes subprocess fork the whole daemon instead of vfork.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BACKGROUND_NICENESS = 10

# Self-contained on purpose: it must run before anything of door-bridge is imported. setpriority
# to at least `N` (never lower: an already niced daemon's child stays as nice as the daemon).
# The unit allows setpriority back out of `@resources` (systemd/door-bridge.service); when a
# stricter drop-in denies it again (EPERM), the child still does its work, at the daemon's
# priority, and says so once in the journal (`<4>`: journald reads the priority prefix).
_BOOTSTRAP = (
    "import os, runpy, sys\n"
    "n = max(int(sys.argv[1]), os.getpriority(os.PRIO_PROCESS, 0))\n"
    "try:\n"
    "    os.setpriority(os.PRIO_PROCESS, 0, n)\n"
    "except OSError as e:\n"
    "    print(f'<4>background_child_not_niced module={sys.argv[2]} error=\"{type(e).__name__}: {e}\" '\n"
    "          'effect=\"it runs at the daemon priority and competes with decisions for the CPU\" '\n"
    "          'check=\"SystemCallFilter= of the unit and its drop-ins must allow setpriority '\n"
    "          '(systemctl cat door-bridge)\"', file=sys.stderr, flush=True)\n"
    "module = sys.argv[2]\n"
    "sys.argv[:] = [module, *sys.argv[3:]]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def background_argv(module: str, *args: str, niceness: int = BACKGROUND_NICENESS) -> list[str]:
    """argv that runs `python -m module args…` at `niceness` from its first instruction."""
    return [sys.executable, "-c", _BOOTSTRAP, str(niceness), module, *args]


def start_piped_child(module: str, first_line: bytes) -> "subprocess.Popen[bytes]":
    """A background child that talks over its stdin and stdout (the MQTT publisher, the metrics
    exposition): niced, this checkout's package importable, its settings as the first stdin line
    (never argv or the environment, which `ps` shows). Raises OSError if it cannot be started."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    child = subprocess.Popen(background_argv(module), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                             close_fds=True)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(first_line)
    child.stdin.flush()
    return child
