"""Bundle records of door policy (`schedule`, `holiday`, `door_mode`) → validated values.

Validation happens once, when a bundle is applied (a bad record refuses the whole bundle, naming its
line); the cache keeps the checked JSON and turns it into `Schedule`/`Holiday`/`DoorPolicy` values
once per cache version. Nothing here runs per decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from verifier.door_mode import MODES, DoorPolicy, FirstPersonIn, Mode
from verifier.schedule import WEEKDAYS, Holiday, Schedule, ScheduleError, check_no_overlap, parse_slot

MAX_SLOTS = 64
MAX_HOLIDAY_DAYS = 366


def _text(r: dict[str, Any], key: str, required: bool = False) -> str | None:
    v = r.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v or len(v) > 256:
        raise ScheduleError(f"{key} must be a non-empty string of at most 256 characters")
    return v


def check_schedule(r: dict[str, Any]) -> dict[str, Any]:
    """A mode schedule has a `default` mode and a `mode` on every slot; an access schedule (for
    grants) has neither."""
    default = r.get("default")
    if default is not None and default not in MODES:
        raise ScheduleError(f"default must be one of {', '.join(sorted(MODES))}")
    raw = r.get("slots", [])
    if not isinstance(raw, list) or len(raw) > MAX_SLOTS:
        raise ScheduleError(f"slots must be a list of at most {MAX_SLOTS} slots")
    slots = tuple(parse_slot(s, f"slots[{i}]", MODES if default is not None else None) for i, s in enumerate(raw))
    if default is not None and any(s.mode is None for s in slots):
        raise ScheduleError("slots of a mode schedule (one with a default) each need a mode")
    check_no_overlap(slots, "slots")
    return {"id": _text(r, "id", True), "name": _text(r, "name"), "default": default, "slots": raw}


def check_holiday(r: dict[str, Any]) -> dict[str, Any]:
    raw = r.get("date")
    try:
        day = date.fromisoformat(raw) if isinstance(raw, str) and len(raw) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise ScheduleError(f"date must be a local date YYYY-MM-DD, got {str(raw)[:16]!r}")
    days = r.get("days", 1)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_HOLIDAY_DAYS:
        raise ScheduleError(f"days must be an integer from 1 to {MAX_HOLIDAY_DAYS}")
    kind = r.get("holidayType", "holiday")
    if not isinstance(kind, str) or not kind or len(kind) > 32 or kind.lower() in WEEKDAYS:
        raise ScheduleError("holidayType must be a short name that is not a weekday")
    return {"id": _text(r, "id", True), "date": raw, "days": days, "holidayType": kind.lower(), "name": _text(r, "name")}


def check_door_mode(r: dict[str, Any]) -> dict[str, Any]:
    readers = r.get("readers")
    if readers is not None and (not isinstance(readers, list) or not readers
                                or not all(isinstance(x, str) and x for x in readers) or len(readers) > 256):
        raise ScheduleError("readers must be a non-empty list of reader ids (absent: id names a configured door)")
    mode, schedule = r.get("mode"), _text(r, "schedule")
    if (mode is None) == (schedule is None):
        raise ScheduleError("a door_mode needs exactly one of mode and schedule")
    if mode is not None and mode not in MODES:
        raise ScheduleError(f"mode must be one of {', '.join(sorted(MODES))}")
    timeout = r.get("pinTimeoutS")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 1 <= timeout <= 300):
        raise ScheduleError("pinTimeoutS must be a number of seconds from 1 to 300")
    codes = r.get("facilityCodes", [])
    if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 10**7 for c in codes):
        raise ScheduleError("facilityCodes must be a list of integers (0..9999999)")
    fpi = r.get("firstPersonIn", False)
    if not (isinstance(fpi, bool) or (isinstance(fpi, list) and all(isinstance(x, str) and x for x in fpi))):
        raise ScheduleError("firstPersonIn must be true/false or a list of role ids")
    return {"id": _text(r, "id", True), "readers": readers, "mode": mode, "schedule": schedule,
            "pinTimeoutS": timeout, "facilityCodes": codes, "firstPersonIn": fpi}


# --- stored JSON → values (once per cache version) -------------------------------------------------


def schedule_of(body: str) -> Schedule:
    r = json.loads(body)
    default = r.get("default")
    modes = MODES if default is not None else None
    return Schedule(r["id"], tuple(parse_slot(s, f"slots[{i}]", modes) for i, s in enumerate(r["slots"])), default)


def holiday_of(body: str) -> Holiday:
    r = json.loads(body)
    return Holiday(r["id"], date.fromisoformat(r["date"]), r["days"], r["holidayType"], r.get("name"))


def door_policy_of(body: str) -> DoorPolicy:
    r = json.loads(body)
    fpi = r.get("firstPersonIn")
    return DoorPolicy(
        id=r["id"], readers=tuple(r["readers"]) if r.get("readers") else None,
        mode=Mode(r["mode"]) if r.get("mode") else None, schedule_id=r.get("schedule"),
        pin_timeout_s=r.get("pinTimeoutS"), facility_codes=frozenset(r.get("facilityCodes") or ()),
        first_person_in=None if fpi is False or fpi is None else FirstPersonIn(frozenset(fpi) if isinstance(fpi, list) else frozenset()),
    )


@dataclass(frozen=True, slots=True)
class DoorRecords:
    """Everything the door-mode state machine needs from one cache version."""

    policies: tuple[DoorPolicy, ...]
    schedules: dict[str, Schedule]
    holidays: tuple[Holiday, ...]
    override_roles: frozenset[str]
