"""Weekly schedules and holidays in the site's zone: hypothesis against a simple reference, and the
DST edges (spring-forward gap, autumn repeat) in two zones by example.

The reference evaluation is written from the documented rule with nothing of the implementation:
for an instant, look at its local date and the dates either side; on each, the slots of that
date's day token (its holiday type, else its weekday); a slot's edge at wall time W is the first
instant whose wall time on that date is at or after W — found from the zone's offsets around the
date, never with `fold`, and by a minute scan inside a gap. The implementation instead resolves
with `fold`, merges pieces into cached segments and answers from the cache.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings

from tests.support.schedule_cases import (
    BERLIN,
    MODES,
    NEW_YORK,
    ZONES,
    cases,
    ref_edge,
    ref_value,
)
from verifier.schedule import (
    WEEKDAYS,
    Calendar,
    Holiday,
    Schedule,
    ScheduleError,
    ScheduleIndex,
    Slot,
    check_no_overlap,
    parse_slot,
    resolve,
)
from verifier.timeutil import to_ms

# --- the reference ---------------------------------------------------------------------------------


# --- strategies ------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(cases())
def test_effective_value_equals_the_reference_evaluation(case: tuple[str, Schedule, dict[date, Holiday], list[int]]) -> None:
    zone, schedule, hols, instants = case
    index = ScheduleIndex(schedule, ZONES[zone], Calendar(dict(hols)))
    for ms in instants:  # ascending through ONE index: its cached segment is exercised
        assert index.at(ms) == ref_value(schedule, hols, zone, ms), (zone, ms)
        seg = index.current(ms)
        # The segment is honest: the same value at both of its ends, and a change right after it
        # or a look-ahead boundary (no change hidden inside).
        assert ref_value(schedule, hols, zone, seg.from_ms) == seg.value
        assert ref_value(schedule, hols, zone, seg.until_ms - 1) == seg.value


@settings(max_examples=60, deadline=None)
@given(cases())
def test_next_change_is_the_first_instant_the_reference_value_differs(case) -> None:
    zone, schedule, hols, instants = case
    index = ScheduleIndex(schedule, ZONES[zone], Calendar(dict(hols)))
    ms = instants[0]
    nxt = index.next_change(ms)
    if nxt is None:
        return
    here = ref_value(schedule, hols, zone, ms)
    assert ref_value(schedule, hols, zone, nxt.from_ms) != here
    assert ref_value(schedule, hols, zone, nxt.from_ms - 1) == here


# --- DST by example ---------------------------------------------------------------------------------


def _slot(days: str, start: str, end: str, mode: str | None = "unlocked") -> Slot:
    return parse_slot({"days": days.split(","), "start": start, "end": end, **({"mode": mode} if mode else {})},
                      "slot", frozenset(MODES))


def _utc(*args: int) -> int:
    return to_ms(datetime(*args, tzinfo=UTC))


@pytest.mark.parametrize(("tz", "day", "start", "end", "from_utc", "until_utc"), [
    # Berlin spring forward: 01:00 CET → 04:00 CEST is two real hours.
    (BERLIN, date(2026, 3, 29), "01:00", "04:00", (2026, 3, 29, 0, 0), (2026, 3, 29, 2, 0)),
    # An edge inside the gap takes effect at the transition (01:00 UTC = 03:00 CEST).
    (BERLIN, date(2026, 3, 29), "02:30", "05:00", (2026, 3, 29, 1, 0), (2026, 3, 29, 3, 0)),
    # Berlin autumn: 01:00 CEST → 04:00 CET spans the repeated hour: four real hours.
    (BERLIN, date(2026, 10, 25), "01:00", "04:00", (2026, 10, 24, 23, 0), (2026, 10, 25, 3, 0)),
    # An edge in the repeated hour takes effect at its first occurrence (02:30 CEST).
    (BERLIN, date(2026, 10, 25), "02:30", "06:00", (2026, 10, 25, 0, 30), (2026, 10, 25, 5, 0)),
    # New York: the gap is 02:00-03:00 EST→EDT on 2026-03-08.
    (NEW_YORK, date(2026, 3, 8), "01:30", "03:30", (2026, 3, 8, 6, 30), (2026, 3, 8, 7, 30)),
    (NEW_YORK, date(2026, 3, 8), "02:15", "08:00", (2026, 3, 8, 7, 0), (2026, 3, 8, 12, 0)),
    # New York autumn: 01:00-02:00 repeats on 2026-11-01.
    (NEW_YORK, date(2026, 11, 1), "00:30", "03:00", (2026, 11, 1, 4, 30), (2026, 11, 1, 8, 0)),
    (NEW_YORK, date(2026, 11, 1), "01:30", "02:00", (2026, 11, 1, 5, 30), (2026, 11, 1, 7, 0)),
])
def test_slot_edges_across_dst(tz, day, start, end, from_utc, until_utc) -> None:
    slot = _slot(WEEKDAYS[day.weekday()], start, end)
    index = ScheduleIndex(Schedule("s", (slot,), "card-only"), tz)
    seg = index.current(_utc(*from_utc))
    assert (seg.value, seg.from_ms, seg.until_ms) == ("unlocked", _utc(*from_utc), _utc(*until_utc))
    assert index.at(_utc(*from_utc) - 1) == "card-only" and index.at(_utc(*until_utc)) == "card-only"


def test_the_repeated_hour_does_not_start_a_slot_twice() -> None:
    # 02:15-02:45 on the Berlin autumn day: once, at the first 02:15 (CEST); the second 02:15 (CET)
    # is outside it, so a door does not unlock (or run first-person-in) twice.
    index = ScheduleIndex(Schedule("s", (_slot("sun", "02:15", "02:45"),), "card-only"), BERLIN)
    assert index.at(_utc(2026, 10, 25, 0, 20)) == "unlocked"  # 02:20 CEST
    assert index.at(_utc(2026, 10, 25, 1, 20)) == "card-only"  # 02:20 CET


def test_a_slot_wholly_inside_the_gap_does_not_happen() -> None:
    index = ScheduleIndex(Schedule("s", (_slot("sun", "02:10", "02:50"),), "card-only"), BERLIN)
    day = [index.at(_utc(2026, 3, 28, 23) + m * 60_000) for m in range(0, 6 * 60)]
    assert set(day) == {"card-only"}
    assert index.next_change(_utc(2026, 3, 28, 23)).from_ms == _utc(2026, 4, 5, 0, 10)  # next Sunday 02:10 CEST


def test_a_holiday_replaces_the_weekday_slots_with_its_own() -> None:
    weekly = _slot("mon,tue,wed,thu,fri", "08:00", "18:00", "unlocked")
    holiday = _slot("holiday", "10:00", "14:00", "card-and-pin")
    cal = Calendar.of([Holiday("xmas", date(2026, 12, 25), 1, "holiday", "Christmas")])
    index = ScheduleIndex(Schedule("s", (weekly, holiday), "card-only"), BERLIN, cal)
    assert index.at(_utc(2026, 12, 24, 8)) == "unlocked"  # Thursday 09:00 CET
    assert index.at(_utc(2026, 12, 25, 8)) == "card-only"  # Friday, Christmas, 09:00
    seg = index.current(_utc(2026, 12, 25, 10))
    assert seg.value == "card-and-pin" and seg.holiday is not None and "Christmas" in seg.why


def test_resolve_agrees_with_the_reference_on_every_quarter_hour_of_the_transition_days() -> None:
    for zone, days in (("Europe/Berlin", (date(2026, 3, 29), date(2026, 10, 25))),
                       ("America/New_York", (date(2026, 3, 8), date(2026, 11, 1)))):
        for day in days:
            for minute in range(0, 24 * 60 + 1, 15):
                assert resolve(day, minute, ZONES[zone]) == ref_edge(day, minute, zone), (zone, day, minute)


@pytest.mark.parametrize(("raw", "message"), [
    ({"days": ["mon"], "start": "8:00", "end": "10:00"}, "HH:MM"),
    ({"days": ["mon"], "start": "10:00", "end": "09:00"}, "end must be after start"),
    ({"days": ["mon"], "start": "10:00", "end": "24:01"}, "between 00:00 and 24:00"),
    ({"days": [], "start": "10:00", "end": "11:00"}, "days"),
    ({"days": ["mon"], "start": "10:00", "end": "11:00", "mode": "open-sesame"}, "mode must be one of"),
])
def test_bad_slots_are_refused_naming_the_field(raw, message) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_slot(raw, "slots[0]", frozenset(MODES))


def test_overlapping_slots_are_refused() -> None:
    with pytest.raises(ScheduleError, match="overlap"):
        check_no_overlap((_slot("mon", "08:00", "12:00"), _slot("mon,tue", "11:00", "13:00")), "slots")
