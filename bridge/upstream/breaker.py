"""Circuit breaker: after N consecutive failures stop asking an upstream for T seconds.

Why: on the scan path a dead upstream would otherwise cost every tap its whole time budget;
with the circuit open the daemon falls back to the cache at once. After the cool-down exactly
one call is let through (half-open); its outcome closes or re-opens the circuit.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Callable

import structlog

from bridge.upstream.errors import UpstreamUnavailable

log = structlog.get_logger()


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Not thread-safe by design: one breaker per upstream, used from the daemon's event loop."""

    def __init__(
        self,
        upstream: str,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s > 0")
        self.upstream = upstream
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        """The state as of now: an open circuit whose cool-down has passed reads as half-open."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return self._state

    def before_call(self) -> None:
        """Raise `UpstreamUnavailable` instead of letting a call through to a dead upstream."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            if self._state is not CircuitState.HALF_OPEN:
                self._state = CircuitState.HALF_OPEN
                log.info("upstream_circuit_half_open", upstream=self.upstream)
            self._probe_in_flight = True
            return
        retry_in = max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
        raise UpstreamUnavailable(
            self.upstream, f"circuit open after {self._failures} consecutive failures (next probe in {retry_in:.0f} s)"
        )

    def record_success(self) -> None:
        if self._state is not CircuitState.CLOSED:
            log.info("upstream_circuit_closed", upstream=self.upstream)
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_in_flight = False
        if self._state is CircuitState.HALF_OPEN or (
            self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._state = CircuitState.OPEN
            self._opened_at = self._clock()
            log.warning(
                "upstream_circuit_opened", upstream=self.upstream, failures=self._failures, cooldown_s=self.cooldown_s
            )

    def release(self) -> None:
        """A call ended without a verdict (cancelled): let the next call be the probe."""
        self._probe_in_flight = False
