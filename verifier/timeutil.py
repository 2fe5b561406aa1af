"""Time rules shared by every seed: ISO 8601, a datetime without an offset is UTC (the SNA rule),
windows are half-open `[start, end)`.

Inside the cache every instant is an integer of milliseconds since the epoch: comparisons on the
hot path are integer compares, and SQLite indexes them natively.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

# Sentinels for an open-ended window ("optional — auto-expires" in Frontelio's grant body).
MIN_MS = -(2**62)
MAX_MS = 2**62
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)


class TimeFormatError(ValueError):
    pass


def parse_instant(value: Any, field: str) -> datetime:
    """ISO 8601 string (naive → UTC) or epoch milliseconds (Sifely's `startDate`/`endDate`)."""
    if isinstance(value, bool):
        raise TimeFormatError(f"{field}: expected an ISO 8601 datetime, got a boolean")
    if isinstance(value, int):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except (OverflowError, OSError, ValueError):  # beyond year 1..9999 or the platform's time_t
            raise TimeFormatError(f"{field}: epoch milliseconds out of range: {value}") from None
    if not isinstance(value, str):
        raise TimeFormatError(f"{field}: expected an ISO 8601 datetime, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise TimeFormatError(f"{field}: not an ISO 8601 datetime: {value[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def to_ms(instant: datetime) -> int:
    """Exact integer arithmetic: `timestamp() * 1000` is a float and lands one ms early for ~1% of
    instants, which moves a half-open window's boundary."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return (instant - _EPOCH) // _ONE_MS


def opt_ms(value: Any, field: str, default: int) -> int:
    """An optional window bound: missing or null means open-ended."""
    if value is None:
        return default
    return to_ms(parse_instant(value, field))


def from_ms(ms: int) -> datetime | None:
    if ms <= MIN_MS or ms >= MAX_MS:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


def iso(instant: datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms(ms: int | None) -> str | None:
    """`iso` of an epoch-milliseconds value (a stored window edge, a next change)."""
    return iso(from_ms(ms)) if ms is not None else None


def iso_seconds(instant: datetime | None) -> str | None:
    """Whole seconds with the offset (`…T10:00:00+00:00`): the spelling `status` has always shown."""
    return instant.isoformat(timespec="seconds") if instant is not None else None


def within(start_ms: int, end_ms: int, now_ms: int) -> bool:
    """Half-open: the first millisecond of `start` counts, the first of `end` does not."""
    return start_ms <= now_ms < end_ms
