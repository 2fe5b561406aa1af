"""Offline passcodes: minted from a door secret and a window, accepted only inside it."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier import passcode
from verifier.passcode import (
    CYCLE_HOURS,
    MAC_DIGITS,
    MAX_HOURS,
    PASSCODE_LENGTH,
    WINDOW_DIGITS,
    PasscodeResult,
    PasscodeStatus,
    check,
    mint,
    offline_code_check,
)
from verifier.types import Reason

SECRET = bytes(range(32))
DOOR = "main"
FROM = datetime(2026, 11, 22, 15, tzinfo=UTC)  # check-in 15:00
UNTIL = datetime(2026, 11, 24, 11, tzinfo=UTC)  # check-out 11:00 two days later
US = timedelta(microseconds=1)
NO_SKEW = timedelta(0)


@pytest.fixture(scope="module")
def code() -> str:
    return mint(SECRET, DOOR, FROM, UNTIL)


def test_code_is_twelve_ascii_digits(code: str) -> None:
    assert len(code) == PASSCODE_LENGTH == 12 and code.isascii() and code.isdigit()


def test_round_trip_gives_ok_and_the_window(code: str) -> None:
    assert check(SECRET, DOOR, code, FROM + timedelta(hours=5)) == PasscodeResult(PasscodeStatus.OK, FROM, UNTIL)


def test_minting_is_deterministic_and_window_specific(code: str) -> None:
    assert mint(SECRET, DOOR, FROM, UNTIL) == code
    assert mint(SECRET, DOOR, FROM, UNTIL + timedelta(hours=1)) != code
    assert mint(SECRET, DOOR, FROM + timedelta(hours=1), UNTIL) != code


@pytest.mark.parametrize(
    ("now", "status"),
    [
        (FROM - US, PasscodeStatus.BEFORE_WINDOW),
        (FROM, PasscodeStatus.OK),
        (UNTIL - US, PasscodeStatus.OK),
        (UNTIL, PasscodeStatus.AFTER_WINDOW),
    ],
)
def test_window_is_half_open_without_skew(code: str, now: datetime, status: PasscodeStatus) -> None:
    assert check(SECRET, DOOR, code, now, skew=NO_SKEW).status is status


@pytest.mark.parametrize(
    ("now", "status"),
    [
        (FROM - timedelta(minutes=10) - US, PasscodeStatus.BEFORE_WINDOW),
        (FROM - timedelta(minutes=10), PasscodeStatus.OK),
        (UNTIL + timedelta(minutes=10) - US, PasscodeStatus.OK),
        (UNTIL + timedelta(minutes=10), PasscodeStatus.AFTER_WINDOW),
    ],
)
def test_default_skew_widens_both_edges_by_ten_minutes(code: str, now: datetime, status: PasscodeStatus) -> None:
    assert passcode.DEFAULT_SKEW == timedelta(minutes=10)
    assert check(SECRET, DOOR, code, now).status is status


def test_largest_skew_still_finds_the_window(code: str) -> None:
    skew = passcode.MAX_SKEW
    assert check(SECRET, DOOR, code, FROM - skew, skew=skew).status is PasscodeStatus.OK
    assert check(SECRET, DOOR, code, UNTIL + skew - US, skew=skew).status is PasscodeStatus.OK
    with pytest.raises(ValueError, match="skew"):
        check(SECRET, DOOR, code, FROM, skew=skew + US)


def test_shortest_and_longest_windows_at_their_edges() -> None:
    for hours in (1, MAX_HOURS):
        until = FROM + timedelta(hours=hours)
        code = mint(SECRET, DOOR, FROM, until)
        assert check(SECRET, DOOR, code, FROM, skew=NO_SKEW) == PasscodeResult(PasscodeStatus.OK, FROM, until)
        assert check(SECRET, DOOR, code, until - US, skew=NO_SKEW).ok
        assert check(SECRET, DOOR, code, FROM - US, skew=NO_SKEW).status is PasscodeStatus.BEFORE_WINDOW
        assert check(SECRET, DOOR, code, until, skew=NO_SKEW).status is PasscodeStatus.AFTER_WINDOW


def test_far_before_and_after_still_say_which_side_with_the_real_window(code: str) -> None:
    """Outside the nearest cycle the start hour is ambiguous; the MAC picks the right reading."""
    for days, status in [(-300, PasscodeStatus.BEFORE_WINDOW), (-15, PasscodeStatus.BEFORE_WINDOW),
                         (20, PasscodeStatus.AFTER_WINDOW), (300, PasscodeStatus.AFTER_WINDOW)]:
        result = check(SECRET, DOOR, code, FROM + timedelta(days=days))
        assert result == PasscodeResult(status, FROM, UNTIL), days


def test_every_start_hour_in_a_cycle_round_trips() -> None:
    for hour in range(CYCLE_HOURS + 3):
        start = FROM + timedelta(hours=hour)
        code = mint(SECRET, DOOR, start, start + timedelta(hours=3))
        assert check(SECRET, DOOR, code, start + timedelta(hours=2, minutes=59)).ok, hour


def test_naive_datetimes_are_utc_and_other_offsets_are_converted(code: str) -> None:
    tokyo = timezone(timedelta(hours=9))
    assert mint(SECRET, DOOR, FROM.replace(tzinfo=None), UNTIL.astimezone(tokyo)) == code
    assert check(SECRET, DOOR, code, FROM.replace(tzinfo=None)).ok
    assert check(SECRET, DOOR, code, (UNTIL - US).astimezone(tokyo), skew=NO_SKEW).ok


def test_wrong_door_is_bad_mac(code: str) -> None:
    assert check(SECRET, "back", code, FROM) == PasscodeResult(PasscodeStatus.BAD_MAC)


def test_wrong_secret_is_bad_mac(code: str) -> None:
    assert check(bytes(reversed(SECRET)), DOOR, code, FROM).status is PasscodeStatus.BAD_MAC


def test_every_single_digit_change_is_refused(code: str) -> None:
    now = FROM + timedelta(hours=1)
    for i in range(len(code)):
        for d in "0123456789":
            if d == code[i]:
                continue
            tampered = code[:i] + d + code[i + 1 :]
            result = check(SECRET, DOOR, tampered, now)
            # A changed window digit can also land on a window value no code has.
            assert result.status in (PasscodeStatus.BAD_MAC, PasscodeStatus.NOT_PASSCODE), (i, d)
            assert result.valid_from is None


def test_grouping_separators_are_ignored(code: str) -> None:
    assert check(SECRET, DOOR, f"{code[:4]} {code[4:8]}-{code[8:]}", FROM).ok


@pytest.mark.parametrize(
    "text",
    ["", "1234", "1" * 11, "1" * 13, "12345678901a", "１２３４５６７８９０１２", "١٢٣٤٥٦٧٨٩٠١٢", "99999" + "0" * 7],
)
def test_other_shapes_are_not_passcodes(text: str) -> None:
    # too short, too long, a letter, full-width and Arabic-Indic digits, a window value no code has
    assert check(SECRET, DOOR, text, FROM) == PasscodeResult(PasscodeStatus.NOT_PASSCODE)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="0123456789 -", min_size=10, max_size=16)))
def test_check_never_raises_on_any_string(text: str) -> None:
    assert isinstance(check(SECRET, DOOR, text, FROM), PasscodeResult)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9990, 1, 1)),
    st.integers(1, MAX_HOURS),
    st.integers(0, 10**12),
)
def test_any_window_round_trips_at_any_date(start: datetime, hours: int, offset_us: int) -> None:
    start = start.replace(minute=0, second=0, microsecond=0)
    until = start + timedelta(hours=hours)
    code = mint(SECRET, DOOR, start, until)
    now = start + timedelta(microseconds=offset_us % (hours * 3600 * 10**6))
    assert check(SECRET, DOOR, code, now, skew=NO_SKEW) == PasscodeResult(
        PasscodeStatus.OK, start.replace(tzinfo=UTC), until.replace(tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "message"),
    [
        (FROM + timedelta(minutes=30), UNTIL, "whole UTC hour"),
        (FROM, UNTIL + timedelta(seconds=1), "whole UTC hour"),
        (FROM, FROM, "after valid_from"),
        (UNTIL, FROM, "after valid_from"),
        (FROM, FROM + timedelta(hours=MAX_HOURS + 1), "at most 12 days"),
    ],
)
def test_windows_the_scheme_cannot_carry_are_refused_when_minting(
    valid_from: datetime, valid_until: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mint(SECRET, DOOR, valid_from, valid_until)


def test_short_secret_or_empty_door_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        mint(b"short", DOOR, FROM, UNTIL)
    with pytest.raises(ValueError, match="door_id"):
        check(SECRET, "", "0" * 12, FROM)


def test_errors_never_quote_the_secret_or_code(code: str) -> None:
    with pytest.raises(ValueError) as caught:
        mint(SECRET, DOOR, FROM, FROM)
    assert SECRET.hex() not in str(caught.value) and code not in str(caught.value)


def test_verifier_hook_answers_per_reader(code: str) -> None:
    hook = offline_code_check({"R-front": (DOOR, SECRET), "R-back": ("back", SECRET)})
    assert hook(code, "R-front", FROM) == (None, "offline passcode")
    assert hook(code, "R-front", UNTIL + timedelta(hours=1)) == (Reason.OUT_OF_DATE_WINDOW, "offline passcode")
    assert hook(code, "R-back", FROM) is None  # another door's code: an unknown PIN there
    assert hook(code, "R-other", FROM) is None  # reader without offline codes
    assert hook("1234", "R-front", FROM) is None


# --- guessing ---------------------------------------------------------------------------------
# The documented bound: a guess is accepted with probability at most 10**-MAC_DIGITS, even for a
# guesser who picks window digits that cover `now` (docs/offline-passcodes.md).
BOUND = 10.0**-MAC_DIGITS


def test_random_codes_are_accepted_no_more_often_than_the_bound() -> None:
    rng = random.Random(20261122)
    now = FROM + timedelta(hours=7)
    trials = 4000
    accepted = sum(check(SECRET, DOOR, f"{rng.randrange(10**12):012d}", now).ok for _ in range(trials))
    # At the bound the chance of even one acceptance in these trials is trials * BOUND = 0.04%,
    # so a single acceptance already says the bound is broken (p < 0.0004).
    assert trials * BOUND < 0.001
    assert accepted == 0


def test_guessing_the_mac_for_a_window_that_covers_now_succeeds_only_with_the_one_right_value(code: str) -> None:
    rng = random.Random(7)
    now = FROM + timedelta(hours=7)
    window, right_mac = code[:WINDOW_DIGITS], int(code[WINDOW_DIGITS:])
    guesses = {rng.randrange(10**MAC_DIGITS) for _ in range(4000)} - {right_mac}
    assert not [g for g in guesses if check(SECRET, DOOR, f"{window}{g:0{MAC_DIGITS}d}", now).ok]
    assert check(SECRET, DOOR, f"{window}{right_mac:0{MAC_DIGITS}d}", now).ok


def test_mac_digits_are_uniform_so_no_guess_beats_the_bound() -> None:
    """The bound assumes every MAC value is equally likely: check the last two digits' spread."""
    counts: Counter[str] = Counter()
    for door in range(20):
        for hour in range(0, 1000, 1):
            start = FROM + timedelta(hours=hour)
            counts[mint(SECRET, f"door-{door}", start, start + timedelta(hours=1 + hour % 5))[-2:]] += 1
    n, cells = sum(counts.values()), 100
    expected = n / cells
    chi2 = sum((counts[f"{i:02d}"] - expected) ** 2 / expected for i in range(cells))
    # 99 degrees of freedom: chi2 above 160 happens by chance with p < 1e-4.
    assert len(counts) == cells and chi2 < 160, chi2


def test_the_window_fields_fit_the_digits() -> None:
    assert CYCLE_HOURS * MAX_HOURS <= 10**WINDOW_DIGITS
    largest = mint(SECRET, DOOR, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=CYCLE_HOURS - 1),
                   datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=CYCLE_HOURS - 1 + MAX_HOURS))
    assert int(largest[:WINDOW_DIGITS]) == CYCLE_HOURS * MAX_HOURS - 1
