"""Retry policy for BACKGROUND upstream work only (heartbeat, sync, replication).

The scan path never retries: it gets one attempt inside its budget, then the cache decides.
Only `UpstreamUnavailable` is retried; a rejection (bad key, plan-gated) or a protocol error
would fail the same way again. Jitter keeps a fleet of doors from reconnecting in lock-step
after an outage.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_random_exponential

from bridge.config.upstream import HttpSettings
from bridge.upstream.errors import UpstreamUnavailable

log = structlog.get_logger()
T = TypeVar("T")


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.info(
        "upstream_retry",
        attempt=state.attempt_number,
        wait_s=round(state.next_action.sleep, 2) if state.next_action else None,
        error=str(error),
    )


def background_retrying(
    settings: HttpSettings, *, sleep: Callable[[float], Awaitable[Any]] | None = None
) -> AsyncRetrying:
    """`async for attempt in background_retrying(s): with attempt: await ...` — tenacity's own idiom."""
    extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
    return AsyncRetrying(
        stop=stop_after_delay(settings.retry_deadline_s),
        wait=wait_random_exponential(multiplier=0.5, max=settings.retry_max_wait_s),
        retry=retry_if_exception_type(UpstreamUnavailable),
        before_sleep=_log_retry,
        reraise=True,
        **extra,
    )


async def call_with_retry(
    settings: HttpSettings,
    operation: Callable[[], Awaitable[T]],
    *,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> T:
    """Run `operation` until it succeeds, raises a non-transient error, or the deadline passes."""

    async def attempt() -> T:  # tenacity awaits only what it recognises as a coroutine function
        return await operation()

    return await background_retrying(settings, sleep=sleep)(attempt)
