"""Circuit breaker state machine with an injected clock."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from bridge.upstream import CircuitBreaker, CircuitState, UpstreamUnavailable
from tests.support.harness import SetMonotonic


def open_breaker(clock: SetMonotonic, threshold: int = 3) -> CircuitBreaker:
    breaker = CircuitBreaker("frontelio", failure_threshold=threshold, cooldown_s=10, clock=clock)
    for _ in range(threshold):
        breaker.before_call()
        breaker.record_failure()
    return breaker


def test_failures_below_threshold_keep_it_closed_and_success_resets_the_count() -> None:
    breaker = CircuitBreaker("x", failure_threshold=3, cooldown_s=10, clock=SetMonotonic(0.0))
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED


def test_threshold_opens_and_refuses_until_the_cool_down_ends() -> None:
    clock = SetMonotonic(0.0)
    with capture_logs() as logs:
        breaker = open_breaker(clock)
    assert breaker.state is CircuitState.OPEN
    assert [e["event"] for e in logs] == ["upstream_circuit_opened"]
    assert logs[0]["upstream"] == "frontelio" and logs[0]["failures"] == 3
    clock.now = 9.99
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        breaker.before_call()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = SetMonotonic(0.0)
    breaker = open_breaker(clock)
    clock.now = 10
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.before_call()
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()


def test_probe_success_closes_probe_failure_reopens_for_a_new_cool_down() -> None:
    clock = SetMonotonic(0.0)
    breaker = open_breaker(clock)
    clock.now = 10
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    clock.now = 19.9
    assert breaker.state is CircuitState.OPEN
    clock.now = 20
    breaker.before_call()
    with capture_logs() as logs:
        breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert [e["event"] for e in logs] == ["upstream_circuit_closed"]
    breaker.before_call()  # closed: no refusal


def test_a_cancelled_probe_frees_the_slot() -> None:
    clock = SetMonotonic(0.0)
    breaker = open_breaker(clock)
    clock.now = 10
    breaker.before_call()
    breaker.release()
    breaker.before_call()  # the next call may probe
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize("threshold, cooldown", [(0, 1.0), (1, 0.0)])
def test_nonsense_settings_fail_loudly(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=threshold, cooldown_s=cooldown)
