"""Offline passcodes: numeric codes a door accepts with no sync, only inside their window.

The central (or `door-bridge passcode mint`) and the door share one secret per door. A code is
five window digits followed by seven MAC digits:

    WWWWW MMMMMMM
    W = (start_hour mod CYCLE_HOURS) * MAX_HOURS + (hours - 1)      window, in whole UTC hours
    M = HMAC-SHA256(secret, domain | door_id | start_hour | hours)[:8] as an integer mod 10**7

`start_hour` is hours since the Unix epoch. Only `start_hour mod CYCLE_HOURS` is in the code; the
door recovers the full value from its own clock, and the MAC covers the full value, so a code
for another fortnight cannot be read as one for this one. Pure: the clock is the `now` argument.
See docs/offline-passcodes.md for the reasoning behind the numbers.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from verifier.types import Reason

WINDOW_DIGITS = 5
MAC_DIGITS = 7
PASSCODE_LENGTH = WINDOW_DIGITS + MAC_DIGITS  # 12: the longest keypad entry the parser accepts
MAX_HOURS = 12 * 24  # longest window: 12 days
CYCLE_HOURS = 14 * 24  # start hour is sent modulo two weeks; 336 * 288 < 10**5
DEFAULT_SKEW = timedelta(minutes=10)
MAX_SKEW = timedelta(hours=1)  # the in-window decoding below leaves one hour of margin each side
MIN_SECRET_BYTES = 16
# When the MAC does not match the nearest reading of the window, the other readings a year either
# way are tried, so a code used days early or late says "before"/"after" instead of "bad MAC".
ALIAS_SEARCH_HOURS = 366 * 24

_HOUR = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOMAIN = b"door-bridge/offline-passcode/v1\x00"
_SEPARATORS = str.maketrans("", "", " -")

assert CYCLE_HOURS * MAX_HOURS <= 10**WINDOW_DIGITS
assert CYCLE_HOURS >= MAX_HOURS + 2


class PasscodeStatus(StrEnum):
    OK = "ok"
    NOT_PASSCODE = "not_passcode"  # wrong shape: not 12 digits, or a window field no code has
    BEFORE_WINDOW = "before_window"
    AFTER_WINDOW = "after_window"
    BAD_MAC = "bad_mac"  # forged, mistyped, another door's, or minted with another secret


@dataclass(frozen=True, slots=True)
class PasscodeResult:
    """The window is set only when the MAC matched, so it is never an attacker's claim."""

    status: PasscodeStatus
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status is PasscodeStatus.OK


def mint(secret: bytes, door_id: str, valid_from: datetime, valid_until: datetime) -> str:
    """The code for `[valid_from, valid_until)` at `door_id`.

    Naive datetimes are UTC. Raises ValueError (with a message for the operator) on a window the
    scheme cannot carry: not on whole UTC hours, empty, or longer than MAX_HOURS.
    """
    _check_secret(secret, door_id)
    start, end = _whole_hour(valid_from, "valid_from"), _whole_hour(valid_until, "valid_until")
    hours = end - start
    if hours <= 0:
        raise ValueError("valid_until must be after valid_from")
    if hours > MAX_HOURS:
        raise ValueError(f"an offline passcode lasts at most {MAX_HOURS // 24} days; mint several, or use a synced PIN")
    window = (start % CYCLE_HOURS) * MAX_HOURS + (hours - 1)
    return f"{window:0{WINDOW_DIGITS}d}{_mac(secret, door_id, start, hours):0{MAC_DIGITS}d}"


def check(
    secret: bytes, door_id: str, code: str, now: datetime, *, skew: timedelta = DEFAULT_SKEW
) -> PasscodeResult:
    """Is `code` a passcode for `door_id` valid at `now`? Total on `code`: never raises for it.

    The window is widened by `skew` on both sides for the door's clock error. Spaces and dashes
    are ignored (a code read out as "12345 678-9012"). `secret`, `door_id`, `now` and `skew` are
    the program's own values and raise ValueError if unusable.
    """
    _check_secret(secret, door_id)
    if not timedelta(0) <= skew <= MAX_SKEW:
        raise ValueError(f"skew must be between 0 and {MAX_SKEW}")
    digits = code.translate(_SEPARATORS) if isinstance(code, str) else ""
    if len(digits) != PASSCODE_LENGTH or not (digits.isascii() and digits.isdigit()):
        return PasscodeResult(PasscodeStatus.NOT_PASSCODE)
    window, mac = int(digits[:WINDOW_DIGITS]), int(digits[WINDOW_DIGITS:])
    if window >= CYCLE_HOURS * MAX_HOURS:
        return PasscodeResult(PasscodeStatus.NOT_PASSCODE)
    start_mod, hours = divmod(window, MAX_HOURS)
    hours += 1
    now_us = _micros(now)
    now_hour = now_us // (3600 * 10**6)
    # The one start hour ≡ start_mod that could put `now` inside the window: no earlier than
    # MAX_HOURS (+1 of skew margin) ago, and less than one cycle after that.
    lowest = now_hour - MAX_HOURS - 1
    nearest = lowest + (start_mod - lowest) % CYCLE_HOURS
    for start in _readings(nearest):
        if hmac.compare_digest(_mac(secret, door_id, start, hours).to_bytes(8), mac.to_bytes(8)):
            return _judge(start, hours, now_us, skew)
    return PasscodeResult(PasscodeStatus.BAD_MAC)


OFFLINE_LABEL = "offline passcode"


def offline_code_check(
    doors: Mapping[str, tuple[str, bytes]], *, skew: timedelta = DEFAULT_SKEW
) -> Callable[[str, str, datetime], tuple[Reason | None, str] | None]:
    """The verifier's offline-code hook (`verifier.decide.OfflineCodeCheck`).

    `doors` maps a reader id to (door_id, secret) for readers whose door takes offline codes.
    GRANT (None) inside the window, OUT_OF_DATE_WINDOW outside it; None (not this scheme: let
    the verifier answer as for any unknown PIN) for other shapes, a bad MAC or another reader.
    """

    def judge(digits: str, reader_id: str, now: datetime) -> tuple[Reason | None, str] | None:
        door = doors.get(reader_id)
        if door is None:
            return None
        result = check(door[1], door[0], digits, now, skew=skew)
        if result.status is PasscodeStatus.OK:
            return None, OFFLINE_LABEL
        if result.status in (PasscodeStatus.BEFORE_WINDOW, PasscodeStatus.AFTER_WINDOW):
            return Reason.OUT_OF_DATE_WINDOW, OFFLINE_LABEL
        return None

    return judge


def _readings(nearest: int) -> list[int]:
    """The nearest reading first, then the others out to a year, closest first."""
    steps = ALIAS_SEARCH_HOURS // CYCLE_HOURS
    others = sorted((k for k in range(-steps, steps + 1) if k), key=lambda k: (abs(k), k))
    return [nearest] + [nearest + k * CYCLE_HOURS for k in others]


def _judge(start: int, hours: int, now_us: int, skew: timedelta) -> PasscodeResult:
    hour_us, skew_us = 3600 * 10**6, skew // _MICROSECOND
    begin_us, end_us = start * hour_us, (start + hours) * hour_us
    if now_us < begin_us - skew_us:
        status = PasscodeStatus.BEFORE_WINDOW
    elif now_us >= end_us + skew_us:
        status = PasscodeStatus.AFTER_WINDOW
    else:
        status = PasscodeStatus.OK
    try:
        return PasscodeResult(status, _EPOCH + start * _HOUR, _EPOCH + (start + hours) * _HOUR)
    except OverflowError:  # a window past year 9999 cannot be shown, but can still be judged
        return PasscodeResult(status)


def _mac(secret: bytes, door_id: str, start_hour: int, hours: int) -> int:
    door = door_id.encode("utf-8")
    message = (
        _DOMAIN
        + len(door).to_bytes(2, "big")
        + door
        + start_hour.to_bytes(8, "big", signed=True)
        + hours.to_bytes(2, "big")
    )
    digest = hmac.digest(secret, message, "sha256")
    # 64 bits reduced mod 10**7: the bias is below 10**-12, so every MAC value is equally likely.
    return int.from_bytes(digest[:8], "big") % 10**MAC_DIGITS


def _check_secret(secret: bytes, door_id: str) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the door's passcode secret must be at least {MIN_SECRET_BYTES} random bytes")
    if not door_id or len(door_id.encode("utf-8")) > 0xFFFF:
        raise ValueError("door_id must be a non-empty string")


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _micros(moment: datetime) -> int:
    return (_as_utc(moment) - _EPOCH) // _MICROSECOND


def _whole_hour(moment: datetime, name: str) -> int:
    hour, rest = divmod(_micros(moment), 3600 * 10**6)
    if rest:
        raise ValueError(f"{name} must be on a whole UTC hour (offline passcodes have one-hour granularity)")
    return hour
