"""ReplayMemory and RateLimiter on their own: windows, buckets, bounds; the clock is an argument."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.guard import RateLimiter, ReplayMemory
from verifier.types import AccessDecision, Decision, Reason, Source


def _decision(reader: str = "R1", reason: Reason | None = None) -> AccessDecision:
    return AccessDecision(Decision.GRANT if reason is None else Decision.DENY, reason, reader, Source.CARD)


# --- replay memory -------------------------------------------------------------------------------


def test_recall_within_the_window_returns_the_original() -> None:
    memory = ReplayMemory(window_ms=2000)
    original = _decision()
    memory.remember("R1", "card:aaaa", 1_000, original)
    assert memory.recall("R1", "card:aaaa", 1_000) is original
    assert memory.recall("R1", "card:aaaa", 2_999) is original
    assert memory.recall("R1", "card:aaaa", 3_000) is None  # half-open: 2 s later is a new scan


def test_recall_is_per_reader_and_per_credential() -> None:
    memory = ReplayMemory(window_ms=2000)
    memory.remember("R1", "card:aaaa", 0, _decision())
    assert memory.recall("R2", "card:aaaa", 10) is None
    assert memory.recall("R1", "card:bbbb", 10) is None


def test_a_clock_that_steps_back_is_not_a_replay() -> None:
    memory = ReplayMemory(window_ms=2000)
    memory.remember("R1", "card:aaaa", 10_000, _decision())
    assert memory.recall("R1", "card:aaaa", 9_999) is None


def test_remember_again_restarts_the_window() -> None:
    memory = ReplayMemory(window_ms=2000)
    memory.remember("R1", "card:aaaa", 0, _decision())
    newer = _decision(reason=Reason.GRANT_REVOKED)
    memory.remember("R1", "card:aaaa", 1_500, newer)
    assert memory.recall("R1", "card:aaaa", 3_000) is newer


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    memory = ReplayMemory(window_ms=2000, capacity=3)
    for i in range(5):
        memory.remember("R1", f"card:{i}", 100 + i, _decision())
    assert memory.recall("R1", "card:0", 105) is None and memory.recall("R1", "card:1", 105) is None
    assert all(memory.recall("R1", f"card:{i}", 105) is not None for i in (2, 3, 4))


@settings(max_examples=200, deadline=None)
@given(at=st.integers(0, 10**12), later=st.integers(-10_000, 10_000), window=st.integers(1, 10_000))
def test_replay_iff_0_le_elapsed_lt_window(at: int, later: int, window: int) -> None:
    memory = ReplayMemory(window_ms=window)
    memory.remember("R1", "pin:x", at, _decision())
    assert (memory.recall("R1", "pin:x", at + later) is not None) is (0 <= later < window)


# --- rate limiter --------------------------------------------------------------------------------


def test_locks_after_max_denies_for_the_cooldown() -> None:
    limiter = RateLimiter(max_denies=3, window_ms=60_000, cooldown_ms=30_000)
    assert limiter.record_deny("R1", False, 0) is False
    assert limiter.record_deny("R1", False, 1_000) is False
    assert limiter.limited("R1", False, 1_500) is False
    assert limiter.record_deny("R1", False, 2_000) is True
    assert limiter.limited("R1", False, 2_000) and limiter.limited("R1", False, 31_999)
    assert not limiter.limited("R1", False, 32_000)
    assert limiter.locked_readers(10_000) == ["R1"] and limiter.locked_readers(32_000) == []


def test_after_the_lock_the_count_starts_again() -> None:
    limiter = RateLimiter(max_denies=2, window_ms=60_000, cooldown_ms=1_000)
    limiter.record_deny("R1", False, 0)
    assert limiter.record_deny("R1", False, 1) is True
    assert limiter.record_deny("R1", False, 2_000) is False  # one deny after the lock: not locked again
    assert not limiter.limited("R1", False, 2_000)


def test_denies_older_than_the_window_fall_out() -> None:
    limiter = RateLimiter(max_denies=3, window_ms=10_000, cooldown_ms=5_000)
    limiter.record_deny("R1", False, 0)
    limiter.record_deny("R1", False, 5_000)
    assert limiter.record_deny("R1", False, 10_000) is False  # the first one is exactly window_ms old
    assert limiter.record_deny("R1", False, 12_000) is True


def test_keypad_and_card_buckets_and_readers_are_separate() -> None:
    limiter = RateLimiter(max_denies=2, window_ms=60_000, cooldown_ms=30_000)
    limiter.record_deny("R1", True, 0)
    limiter.record_deny("R1", True, 1)
    assert limiter.limited("R1", True, 2)
    assert not limiter.limited("R1", False, 2)
    assert not limiter.limited("R2", True, 2)
    limiter.record_deny("R1", False, 3)
    assert not limiter.limited("R1", False, 4)
    assert limiter.locked_readers(4) == ["R1"]


def test_a_reader_never_seen_is_not_limited() -> None:
    assert not RateLimiter(1, 1_000, 1_000).limited("nowhere", False, 0)


@settings(max_examples=150, deadline=None)
@given(gaps=st.lists(st.integers(0, 20_000), min_size=1, max_size=30), max_denies=st.integers(1, 6))
def test_locked_exactly_when_max_denies_fall_inside_one_window(gaps: list[int], max_denies: int) -> None:
    """A model of the limiter: count denies inside the window since the last lock."""
    window, cooldown = 30_000, 10_000
    limiter = RateLimiter(max_denies, window, cooldown)
    t, locked_until = 0, -1
    recent: list[int] = []
    for gap in gaps:
        t += gap
        recent = [x for x in recent + [t] if t - x < window]
        expect_lock = len(recent) >= max_denies
        assert limiter.record_deny("R", False, t) is expect_lock
        if expect_lock:
            recent, locked_until = [], t + cooldown
        assert limiter.limited("R", False, t) is (t < locked_until)
