"""Why the previous run ended, for the BOOT audit event.

The daemon writes `lifecycle.json` = running at start and stopped at a clean stop; finding
"running" at start means the last run did not stop cleanly. Under systemd, `ExecStopPost=door-bridge
record-exit` stores `$SERVICE_RESULT` (e.g. `watchdog`, `signal`, `exit-code`), which tells a
watchdog restart from a crash — the only place systemd says it.

The unit runs `python -m bridge.state.lifecycle` rather than the full CLI: ExecStopPost shares the
unit's TimeoutStopSec (10 s) and the stop after a watchdog kill is exactly when the machine is
busiest. The full CLI loads the configuration layer (pydantic, httpx, …): ~0.5 s here, and in a
slow guest it overran the 10 s, so the record was lost and a watchdog restart was reported as a
crash. This entry imports only the standard library and takes the state directory from
$STATE_DIRECTORY, which systemd sets for every Exec line of a unit with StateDirectory=.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from bridge.state.json_file import read_json, write_json

MARKER = "lifecycle.json"
EXIT_RECORD = "last-exit.json"


def _write(path: Path, data: dict[str, Any]) -> None:
    write_json(path, data)


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path) or {}
    except (OSError, ValueError):
        return {}


def previous_exit(state_dir: Path) -> dict[str, Any]:
    """{"reason": clean|crash|watchdog|error|first-start|unknown, ...details}."""
    marker = _read(state_dir / MARKER)
    record = _read(state_dir / EXIT_RECORD)
    (state_dir / EXIT_RECORD).unlink(missing_ok=True)
    if not marker:
        return {"reason": "first-start"}
    result = record.get("serviceResult")
    if result == "watchdog":
        reason = "watchdog"
    elif marker.get("state") == "stopped":
        reason = "clean"
    elif result in ("signal", "core-dump"):
        reason = "crash"
    elif result == "exit-code":
        reason = "error"
    elif marker.get("state") == "running":
        reason = "crash"
    else:
        reason = "unknown"
    out: dict[str, Any] = {"reason": reason, "previousStart": marker.get("since")}
    for key in ("serviceResult", "exitCode", "exitStatus"):
        if record.get(key):
            out[key] = record[key]
    return out


def mark_running(state_dir: Path) -> None:
    _write(state_dir / MARKER, {"state": "running", "pid": os.getpid(), "since": _now()})


def mark_stopped(state_dir: Path) -> None:
    _write(state_dir / MARKER, {"state": "stopped", "pid": os.getpid(), "since": _now()})


def record_exit(state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    _write(state_dir / EXIT_RECORD, {"serviceResult": env.get("SERVICE_RESULT"), "exitCode": env.get("EXIT_CODE"),
                                     "exitStatus": env.get("EXIT_STATUS"), "at": _now()})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    """`python -m bridge.state.lifecycle [STATE_DIR]`: record_exit() without loading the configuration."""
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if not target:
        print("bridge.state.lifecycle: no state directory: pass it or run from a unit with StateDirectory=",
              file=sys.stderr)
        return 2
    try:
        record_exit(Path(target))
    except OSError as e:
        print(f"bridge.state.lifecycle: {target}: cannot record why the service stopped: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
