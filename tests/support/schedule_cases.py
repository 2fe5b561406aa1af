"""Reference schedules and a slow, obviously right evaluation of them, shared by the schedule and door-mode tests.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from verifier.schedule import (
    IN,
    WEEKDAYS,
    Holiday,
    Schedule,
    ScheduleError,
    Slot,
    check_no_overlap,
)
from verifier.timeutil import to_ms

BERLIN = ZoneInfo("Europe/Berlin")  # CET/CEST: 2026-03-29 02:00→03:00, 2026-10-25 03:00→02:00


NEW_YORK = ZoneInfo("America/New_York")  # 2026-03-08 02:00→03:00, 2026-11-01 02:00→01:00


LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a 30-minute DST, southern hemisphere


ZONES = {"Europe/Berlin": BERLIN, "America/New_York": NEW_YORK, "Australia/Lord_Howe": LORD_HOWE}


# Instants drawn around the transitions of 2026 in each zone (and ordinary days between).
TRANSITIONS = {
    "Europe/Berlin": [datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)],
    "America/New_York": [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)],
    "Australia/Lord_Howe": [datetime(2026, 4, 4, 15, tzinfo=UTC), datetime(2026, 10, 3, 15, 30, tzinfo=UTC)],
}


MODES = ("card-only", "card-and-pin", "unlocked", "locked")


def _wall(ms: int, tz: ZoneInfo) -> datetime:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).astimezone(tz).replace(tzinfo=None)


@lru_cache(maxsize=4096)
def ref_edge(day: date, minute: int, zone: str) -> int:
    tz = ZONES[zone]
    if minute == 24 * 60:
        day, minute = day + timedelta(days=1), 0
    target = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
    noon = datetime(day.year, day.month, day.day, 12)
    offsets = {(noon + timedelta(hours=h)).replace(tzinfo=tz).utcoffset() for h in (-36, -12, 12, 36)}
    exact = [to_ms((target - off).replace(tzinfo=UTC)) for off in offsets]  # type: ignore[operator]
    hits = [ms for ms in exact if _wall(ms, tz) == target]
    if hits:
        return min(hits)
    ms = min(exact)  # in a gap: scan minute by minute to the first wall time past the target
    while _wall(ms, tz) < target:
        ms += 60_000
    while _wall(ms - 1000, tz) >= target:  # transitions fall on whole seconds
        ms -= 1000
    return ms


def ref_value(schedule: Schedule, holidays: dict[date, Holiday], zone: str, ms: int) -> str | None:
    here = _wall(ms, ZONES[zone]).date()
    for day in (here - timedelta(days=1), here, here + timedelta(days=1)):
        h = holidays.get(day)
        token = h.type if h else WEEKDAYS[day.weekday()]
        for slot in schedule.slots:
            if token in slot.days and ref_edge(day, slot.start_min, zone) <= ms < ref_edge(day, slot.end_min, zone):
                return slot.mode or IN
    return schedule.default


TOKENS = (*WEEKDAYS, "holiday", "half-day")


@st.composite
def schedules(draw: st.DrawFn, access: bool = False) -> Schedule:
    slots: list[Slot] = []
    for _ in range(draw(st.integers(0, 6))):
        days = frozenset(draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4)))
        start = draw(st.integers(0, 24 * 60 - 1))
        # Bias edges towards the small hours, where the transitions are.
        if draw(st.booleans()):
            start = draw(st.integers(60, 200))
        end = draw(st.integers(start + 1, min(24 * 60, start + draw(st.sampled_from([15, 45, 90, 300, 1440])))))
        slot = Slot(days, start, end, None if access else draw(st.sampled_from(MODES)))
        try:
            check_no_overlap((*slots, slot), "slots")
        except ScheduleError:
            continue
        slots.append(slot)
    return Schedule("s", tuple(slots), None if access else draw(st.sampled_from(MODES)))


@st.composite
def holidays(draw: st.DrawFn, around: datetime) -> dict[date, Holiday]:
    out: dict[date, Holiday] = {}
    for i in range(draw(st.integers(0, 3))):
        day = around.date() + timedelta(days=draw(st.integers(-2, 2)))
        out.setdefault(day, Holiday(f"h{i}", day, 1, draw(st.sampled_from(["holiday", "half-day"]))))
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, Schedule, dict[date, Holiday], list[int]]:
    zone = draw(st.sampled_from(sorted(ZONES)))
    around = draw(st.sampled_from(TRANSITIONS[zone]))
    schedule = draw(schedules(access=draw(st.booleans())))
    hols = draw(holidays(around))
    offsets = draw(st.lists(st.integers(-2 * 86400_000, 2 * 86400_000), min_size=1, max_size=25))
    return zone, schedule, hols, sorted(to_ms(around) + o for o in offsets)

