"""Weekly schedules with holidays, evaluated in the site's IANA time zone.

A schedule is a list of slots (`days`, `start`–`end` in local wall time, optionally a `mode`) and a
`default` for the time outside every slot. A `days` entry is a weekday (`mon`…`sun`) or a holiday
*type* (`holiday`, or any name a site gives its holidays): on a local date the calendar lists as a
holiday of type T, only the slots naming T apply — the weekday slots do not. That is how panels
(Mercury, Brivo) model "dated exceptions with their own slots", and it needs no second kind of
slot.

Local wall time meets DST (the one rule, documented in docs/bundle-format.md): a slot edge at wall
time W on date D takes effect at the *first instant whose local wall time on D is at or after W*.
- spring forward (02:00→03:00): an edge at 02:30 takes effect at 03:00, the transition; a slot
  that lies wholly inside the gap does not happen that day;
- autumn repeat (03:00→02:00): an edge at 02:30 takes effect at the first 02:30; the repeated
  hour does not start the slot again. A slot across the repeat (01:00–04:00) simply lasts an
  hour longer.
So every slot of a day is one half-open interval of instants, and a door never flaps twice.

Hot path: `ScheduleIndex.at(now_ms)` answers from the current *segment* (an interval of instants
over which the answer is constant), so a decision costs one integer comparison; the segment is
recomputed only when the clock leaves it. No parsing, no zone arithmetic per decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from verifier.timeutil import to_ms

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 24 * 60
# The value of an access schedule (a grant's weekly pattern) inside one of its slots.
IN = "in"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A segment is computed over a few local days around the instant; status looks this many
# segments ahead for the next change (a schedule with no slot at all never changes).
_LOOKAHEAD_SEGMENTS = 64


class ScheduleError(ValueError):
    """A schedule, slot or holiday that cannot be evaluated; `str()` names the field."""


@dataclass(frozen=True, slots=True)
class Slot:
    days: frozenset[str]
    start_min: int  # minutes after local midnight, 0..1439
    end_min: int  # exclusive, start_min < end_min <= 1440 ("24:00")
    mode: str | None = None

    @property
    def label(self) -> str:
        return f"{','.join(sorted(self.days, key=_day_order))} {_hhmm(self.start_min)}-{_hhmm(self.end_min)}"


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    slots: tuple[Slot, ...]
    default: str | None = None  # the value outside every slot (None: an access schedule → out)

    def value_in(self, slot: Slot) -> str:
        return slot.mode if slot.mode is not None else IN


@dataclass(frozen=True, slots=True)
class Holiday:
    id: str
    date: date
    days: int = 1
    type: str = "holiday"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Calendar:
    """The site's holidays, expanded to one holiday per local date (the first listed wins)."""

    by_date: dict[date, Holiday]

    @staticmethod
    def of(holidays: list[Holiday]) -> "Calendar":
        by_date: dict[date, Holiday] = {}
        for h in sorted(holidays, key=lambda h: h.id):
            for i in range(h.days):
                by_date.setdefault(h.date + timedelta(days=i), h)
        return Calendar(by_date)


EMPTY_CALENDAR = Calendar({})


@dataclass(frozen=True, slots=True)
class Segment:
    """The answer over [from_ms, until_ms): the value, the slot that gives it (None: the default)
    and the holiday of the local date (None: an ordinary day)."""

    value: str | None
    slot: Slot | None
    holiday: Holiday | None
    from_ms: int
    until_ms: int

    def covers(self, now_ms: int) -> bool:
        return self.from_ms <= now_ms < self.until_ms

    @property
    def why(self) -> str:
        where = f"holiday {self.holiday.name or self.holiday.id}" if self.holiday else None
        slot = f"slot {self.slot.label}" if self.slot else "outside every slot"
        return f"{where}: {slot}" if where else slot


# --- parsing (bundle records → values; done once when a bundle is applied or the cache refreshes) --


def parse_hhmm(text: object, field: str) -> int:
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit():
        raise ScheduleError(f"{field} must be HH:MM (local wall time), got {str(text)[:16]!r}")
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ScheduleError(f"{field} must be between 00:00 and 24:00, got {text!r}")
    return hours * 60 + minutes


def parse_slot(raw: object, field: str, modes: frozenset[str] | None) -> Slot:
    if not isinstance(raw, dict):
        raise ScheduleError(f"{field} must be an object with days, start, end")
    days = raw.get("days")
    if not isinstance(days, list) or not days or not all(isinstance(d, str) and d and len(d) <= 32 for d in days):
        raise ScheduleError(f"{field}.days must be a non-empty list of weekdays (mon..sun) or holiday types")
    start, end = parse_hhmm(raw.get("start"), f"{field}.start"), parse_hhmm(raw.get("end"), f"{field}.end")
    if end <= start:
        raise ScheduleError(f"{field}: end must be after start (a slot across midnight is two slots)")
    mode = raw.get("mode")
    if mode is not None and (modes is None or mode not in modes):
        allowed = ", ".join(sorted(modes)) if modes else "none (an access schedule has no modes)"
        raise ScheduleError(f"{field}.mode must be one of {allowed}, got {str(mode)[:32]!r}")
    return Slot(frozenset(d.lower() for d in days), start, end, mode)


def check_no_overlap(slots: tuple[Slot, ...], field: str) -> None:
    """Overlapping slots would make the mode depend on the order of a list: refused instead."""
    for i, a in enumerate(slots):
        for b in slots[i + 1:]:
            if a.days & b.days and a.start_min < b.end_min and b.start_min < a.end_min:
                raise ScheduleError(f"{field}: slots {a.label} and {b.label} overlap")


# --- evaluation --------------------------------------------------------------------------------


def resolve(day: date, minute: int, tz: ZoneInfo) -> int:
    """The first instant (ms) whose local wall time on `day` is at or after `minute`."""
    if minute >= DAY_MINUTES:
        return resolve(day + timedelta(days=1), 0, tz)
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    first = wall.replace(tzinfo=tz, fold=0)  # fold=0: the first of a repeated wall time
    utc = first.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == wall:
        return to_ms(utc)
    # In a spring-forward gap: the wall time never happens; the edge is the transition itself,
    # the first instant whose wall time is past it. Search between the two readings of `wall`.
    lo, hi = to_ms(wall.replace(tzinfo=tz, fold=1).astimezone(UTC)), to_ms(utc)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _local(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)


def local_date(ms: int, tz: ZoneInfo) -> date:
    return _local(ms, tz).date()


@dataclass(frozen=True, slots=True)
class _Piece:
    from_ms: int
    until_ms: int
    value: str | None
    slot: Slot | None
    holiday: Holiday | None


class ScheduleIndex:
    """One schedule in one zone with one calendar; caches the segment the clock is in."""

    def __init__(self, schedule: Schedule, tz: ZoneInfo, calendar: Calendar = EMPTY_CALENDAR) -> None:
        self.schedule = schedule
        self.tz = tz
        self.calendar = calendar
        self._by_token: dict[str, tuple[Slot, ...]] = {}
        for slot in schedule.slots:
            for token in slot.days:
                self._by_token[token] = tuple(sorted((*self._by_token.get(token, ()), slot), key=lambda s: s.start_min))
        self._segment: Segment | None = None
        self._next: tuple[int, Segment | None] | None = None  # (for the segment from, its next change)

    def at(self, now_ms: int) -> str | None:
        """The value at `now_ms` (hot path: one comparison while the segment holds)."""
        seg = self._segment
        if seg is None or not seg.covers(now_ms):
            seg = self._segment = self.segment(now_ms)
        return seg.value

    def current(self, now_ms: int) -> Segment:
        self.at(now_ms)
        assert self._segment is not None
        return self._segment

    def segment(self, now_ms: int) -> Segment:
        day = local_date(now_ms, self.tz)
        pieces = [p for d in (-1, 0, 1) for p in self._day(day + timedelta(days=d))]
        i = next(i for i, p in enumerate(pieces) if p.from_ms <= now_ms < p.until_ms)
        here = pieces[i]
        lo = hi = i
        same = (lambda p: (p.value, p.slot, p.holiday) == (here.value, here.slot, here.holiday))
        while lo > 0 and same(pieces[lo - 1]):
            lo -= 1
        while hi + 1 < len(pieces) and same(pieces[hi + 1]):
            hi += 1
        return Segment(here.value, here.slot, here.holiday, pieces[lo].from_ms, pieces[hi].until_ms)

    def next_change(self, now_ms: int) -> Segment | None:
        """The first segment after now whose value differs (None: none within the look-ahead).
        The same for every instant of the current segment, so it is computed once per segment."""
        here = self.current(now_ms)
        if self._next is not None and self._next[0] == here.from_ms:
            return self._next[1]
        found: Segment | None = None
        seg = here
        for _ in range(_LOOKAHEAD_SEGMENTS):
            seg = self.segment(seg.until_ms)
            if seg.value != here.value:
                found = seg
                break
        self._next = (here.from_ms, found)
        return found

    def _day(self, day: date) -> list[_Piece]:
        """The pieces covering local `day` (first instant of it to the first of the next)."""
        holiday = self.calendar.by_date.get(day)
        token = holiday.type if holiday else WEEKDAYS[day.weekday()]
        begin, end = resolve(day, 0, self.tz), resolve(day, DAY_MINUTES, self.tz)
        default = self.schedule.default
        out: list[_Piece] = []
        at = begin
        for slot in self._by_token.get(token, ()):
            s, e = resolve(day, slot.start_min, self.tz), resolve(day, slot.end_min, self.tz)
            if e <= s:  # wholly inside a spring-forward gap: the slot does not happen today
                continue
            if s > at:
                out.append(_Piece(at, s, default, None, holiday))
            out.append(_Piece(s, e, self.schedule.value_in(slot), slot, holiday))
            at = e
        if end > at:
            out.append(_Piece(at, end, default, None, holiday))
        return out


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _day_order(token: str) -> tuple[int, str]:
    return (WEEKDAYS.index(token), "") if token in WEEKDAYS else (7, token)
