"""bench/fleet.py's harness at CI size: 200 bridges, one loopback Frontelio, a shared 3 s outage.

Each bridge is a real `FrontelioAdapter` (own httpx client, own circuit breaker) heartbeating
through `beat_once`, i.e. the project's tenacity policy; the fake runs in its own process and
records when every request arrived. Run once with the project's jitter and once with the same
policy minus its jitter (`wait_exponential`). The mechanism only, no speed: everybody comes back,
the un-jittered fleet retries on one shared schedule and arrives as a burst, the jittered one is
spread. The figures (peak requests per second, ratio) are bench/fleet.py's to print.

Shortened from production so the run takes seconds: `retry_max_wait_s` 2 s (60 s in production),
`breaker_cooldown_s` 1 s (30 s), outage 3 s; the breaker threshold and the wait's multiplier and
shape are the production ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fleet import FleetRun, FleetSettings, dejittered, peak_in_window, run_both
from bridge.config.upstream import HttpSettings
from bridge.upstream.retry import background_retrying

BRIDGES = 200
SETTINGS = FleetSettings(bridges=BRIDGES, outage_s=3.0, retry_max_wait_s=2.0, retry_deadline_s=30.0,
                         breaker_cooldown_s=1.0, recover_within_s=30.0, seed=7)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[FleetRun, FleetRun]:
    work: Path = tmp_path_factory.mktemp("fleet")
    return run_both(SETTINGS, work)


@pytest.mark.parametrize("which", ["jitter", "no_jitter"])
def test_every_bridge_failed_during_the_outage_then_reconnected(runs: tuple[FleetRun, FleetRun], which: str) -> None:
    run = runs[0] if which == "jitter" else runs[1]
    assert run.settings.jitter is (which == "jitter")
    assert all(n >= 1 for n in run.failures), "every bridge met the outage and backed off"
    assert run.reconnected == BRIDGES
    assert run.reader_ids_seen == {f"FLEET-{i:04d}" for i in range(BRIDGES)}
    # One successful heartbeat per bridge after recovery: the fleet's loopback traffic is bounded.
    assert len(run.arrivals) == BRIDGES


def test_without_jitter_every_bridge_waits_the_same_schedule(runs: tuple[FleetRun, FleetRun]) -> None:
    lockstep = runs[1]
    assert lockstep.waits_by_attempt, "the policy logged its waits"
    for attempt, waits in lockstep.waits_by_attempt.items():
        expected = min(0.5 * 2 ** (attempt - 1), SETTINGS.retry_max_wait_s)
        assert set(waits) == {expected}, f"attempt {attempt}: every bridge waits {expected} s"
    assert len(lockstep.waits_by_attempt[1]) == BRIDGES


def test_with_jitter_the_waits_are_drawn_not_shared(runs: tuple[FleetRun, FleetRun]) -> None:
    jittered = runs[0]
    first = jittered.waits_by_attempt[1]
    assert len(first) == BRIDGES
    # The policy logs waits rounded to 10 ms: [0, 0.5] s holds 51 such values.
    assert len(set(first)) >= 25, "each bridge draws its own wait"
    assert max(first) - min(first) >= 0.25, "spread over the window, not bunched"
    for attempt, waits in jittered.waits_by_attempt.items():
        cap = min(0.5 * 2 ** (attempt - 1), SETTINGS.retry_max_wait_s)
        assert all(0 <= w <= cap for w in waits), f"attempt {attempt}: waits within [0, {cap}]"


def test_the_unjittered_fleet_arrives_as_a_burst_the_jittered_one_spread(runs: tuple[FleetRun, FleetRun]) -> None:
    jittered, lockstep = runs
    # Lock-step: a large share of the whole fleet inside one 100 ms window (one process issues the
    # burst, so it is smeared by this machine's CPU; a real fleet would be tighter still).
    assert lockstep.peak >= BRIDGES // 4, lockstep.figures()
    assert lockstep.peak >= 2 * jittered.peak, (lockstep.figures(), jittered.figures())
    assert jittered.peak < BRIDGES // 4, jittered.figures()


def test_dejittered_is_the_projects_policy_minus_randomness() -> None:
    policy = background_retrying(HttpSettings(retry_max_wait_s=2.0))
    plain = dejittered(policy)
    assert (plain.stop, plain.retry, plain.before_sleep) == (policy.stop, policy.retry, policy.before_sleep)
    assert type(plain.wait).__name__ == "wait_exponential"
    assert [plain.wait.multiplier, plain.wait.max] == [policy.wait.multiplier, policy.wait.max]  # type: ignore[attr-defined]


def test_peak_in_window_counts_a_sliding_window() -> None:
    assert peak_in_window([], 0.1) == 0
    assert peak_in_window([0.0, 0.05, 0.099, 0.1, 0.3], 0.1) == 3  # half-open: 0.1 is the next window's
    assert peak_in_window([0.09, 0.11, 0.12, 0.5], 0.1) == 3  # across a bucket edge at 0.1
