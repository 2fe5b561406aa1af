"""Why the previous run ended, for the BOOT audit event.

The daemon writes `lifecycle.json` = running at start and stopped at a clean stop; finding
"running" at start means the last run did not stop cleanly. Under systemd, `ExecStopPost=door-bridge
record-exit` stores `$SERVICE_RESULT` (e.g. `watchdog`, `signal`, `exit-code`), which tells a
watchdog restart from a crash — the only place systemd says it.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from bridge.statefile import read_json, write_json

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
