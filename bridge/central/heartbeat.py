"""The heartbeat loop: every `heartbeat_interval_s`, each adapter hears from each reader.

A beat that fails transiently is retried with jittered back-off (background work); a beat the
upstream refuses is logged as an error once per change of state and tried again next interval,
so fixing the key on the server side heals the bridge without a restart.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Sequence

import structlog

from bridge.upstream.adapter import UpstreamAdapter
from bridge.config.upstream import HttpSettings
from bridge.upstream.errors import UpstreamError
from bridge.upstream.retry import call_with_retry

log = structlog.get_logger()


async def beat_once(
    adapter: UpstreamAdapter,
    reader_id: str,
    settings: HttpSettings,
    *,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> UpstreamError | None:
    """One heartbeat with retries; the error it ended on, or None. Never raises UpstreamError."""
    try:
        await call_with_retry(settings, lambda: adapter.heartbeat(reader_id), sleep=sleep)
    except UpstreamError as e:
        return e
    return None


async def run_heartbeats(
    adapters: Sequence[UpstreamAdapter],
    reader_ids: Sequence[str],
    settings: HttpSettings,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Run until cancelled. Logs `upstream_heartbeat_failed` / `upstream_heartbeat_ok` on changes."""
    failing: dict[tuple[str, str], str] = {}
    while True:
        for adapter in adapters:
            for reader_id in reader_ids:
                key = (adapter.name, reader_id)
                error = await beat_once(adapter, reader_id, settings, sleep=sleep)
                if error is not None and failing.get(key) != str(error):
                    log.error("upstream_heartbeat_failed", upstream=adapter.name, reader=reader_id, error=str(error))
                    failing[key] = str(error)
                elif error is None and key in failing:
                    log.info("upstream_heartbeat_ok", upstream=adapter.name, reader=reader_id)
                    del failing[key]
        await sleep(settings.heartbeat_interval_s)
