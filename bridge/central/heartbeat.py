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


BeatReport = Callable[[UpstreamAdapter, str, "UpstreamError | None"], None]


class ChangeLog:
    """Logs `upstream_heartbeat_failed` / `upstream_heartbeat_ok` when a beat's outcome changes, so
    a refused key is one error line per change, not one every interval."""

    def __init__(self) -> None:
        self._failing: dict[tuple[str, str], str] = {}

    def report(self, adapter: UpstreamAdapter, reader_id: str, error: UpstreamError | None) -> None:
        key = (adapter.name, reader_id)
        if error is not None and self._failing.get(key) != str(error):
            log.error("upstream_heartbeat_failed", upstream=adapter.name, reader=reader_id, error=str(error))
            self._failing[key] = str(error)
        elif error is None and key in self._failing:
            log.info("upstream_heartbeat_ok", upstream=adapter.name, reader=reader_id)
            del self._failing[key]


async def run_heartbeats(
    adapters: Sequence[UpstreamAdapter],
    reader_ids: Sequence[str],
    settings: HttpSettings,
    *,
    on_result: BeatReport | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Run until cancelled: every `heartbeat_interval_s`, one beat per reader from each adapter that
    has a heartbeat (a no-op is no proof the upstream is there). Each outcome goes to `on_result`
    (the daemon's upstream state); without one, changes are logged (`ChangeLog`)."""
    report = on_result if on_result is not None else ChangeLog().report
    while True:
        for adapter in adapters:
            if not getattr(adapter, "has_heartbeat", True):
                continue
            for reader_id in reader_ids:
                report(adapter, reader_id, await beat_once(adapter, reader_id, settings, sleep=sleep))
        await sleep(settings.heartbeat_interval_s)
