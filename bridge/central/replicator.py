"""Audit replication: drain the outbox to the central, in order, acknowledging only what it stored.

At-least-once: a batch whose answer is lost (dropped connection, crash before the ack commits) is
sent again and the central, idempotent by event id, lists the repeats as `duplicates`. Only ids
the central names (`stored`, `duplicates`, `rejected`) AND that were in the batch are acked; the
rest stay pending and lead the next batch, so order is kept. Nothing is held in memory between
batches: after a restart the outbox (SQLite) says what is still pending.

The outbox's reads and its fsync'd acks run in a worker thread, so the event loop (and with it
the scan path) never waits on the disk for replication.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

import structlog

from bridge.config.upstream import CentralSection, HttpSettings
from bridge.state.outbox import Event, Outbox
from bridge.upstream.central import BatchTooLarge, CentralClient, IngestAnswer
from bridge.upstream.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from bridge.upstream.retry import call_with_retry
from verifier.timeutil import iso_seconds, parse_instant

log = structlog.get_logger()

Sleep = Callable[[float], Awaitable[Any]]


@dataclass
class ReplicationState:
    """For `door-bridge status`. `online` is None until the central has been tried once."""

    online: bool | None = None
    since: datetime | None = None  # when `online` last changed
    last_success_at: datetime | None = None
    last_error: str | None = None
    depth: int = 0
    oldest_pending_at: str | None = None
    sent: int = 0  # events the central acknowledged since start (stored + duplicates + rejected)
    duplicates: int = 0
    rejected: int = 0

    def oldest_pending_age_s(self, now: datetime) -> float | None:
        if self.oldest_pending_at is None:
            return None
        return max(0.0, (now - parse_instant(self.oldest_pending_at, "at")).total_seconds())

    def as_status(self, now: datetime) -> dict[str, Any]:
        t = iso_seconds
        age = self.oldest_pending_age_s(now)
        return {"online": self.online, "since": t(self.since), "last_success_at": t(self.last_success_at),
                "last_error": self.last_error, "depth": self.depth,
                "oldest_pending_age_s": None if age is None else round(age, 1),
                "sent": self.sent, "duplicates": self.duplicates, "rejected": self.rejected}


class Replicator:
    def __init__(
        self,
        client: CentralClient,
        outbox: Outbox,
        section: CentralSection,
        settings: HttpSettings,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.section = section
        self.settings = settings
        self.clock = clock
        self.batch_size = section.batch_size
        self.state = ReplicationState()

    async def send_batch(self, *, sleep: Sleep | None = None) -> int:
        """Send the oldest pending batch (retrying transient failures); returns how many events
        were acknowledged, 0 when nothing is pending. Raises `UpstreamError` when it gives up."""
        batch = await asyncio.to_thread(self.outbox.pending, self.batch_size)
        if not batch:
            return 0
        try:
            answer = await call_with_retry(self.settings, lambda: self.client.post_events([e.as_wire() for e in batch]),
                                           sleep=sleep)
        except BatchTooLarge:
            if len(batch) == 1:  # nothing left to halve: a human must look (stop, don't spin)
                raise UpstreamProtocolError(self.client.name, f"the central refuses even one event (HTTP 413, "
                                            f"event {batch[0].id} of type {batch[0].type})") from None
            self.batch_size = max(1, len(batch) // 2)
            log.warning("replication_batch_too_large", events=len(batch), next_batch=self.batch_size)
            raise
        except UpstreamError as e:
            self._mark(online=False, error=str(e))
            raise
        acked = await self._ack(batch, answer)
        self._mark(online=True, error=None)
        self.state.last_success_at = self.clock()
        if acked == 0:
            raise UpstreamProtocolError(self.client.name, f"the central acknowledged none of {len(batch)} events")
        return acked

    async def _ack(self, batch: list[Event], answer: IngestAnswer) -> int:
        sent = {e.id for e in batch}
        listed = set(answer.stored) | set(answer.duplicates) | {i for i, _ in answer.rejected}
        strangers = listed - sent
        if strangers:
            log.warning("replication_unknown_ids", count=len(strangers), check="the central answers for events it was not sent")
        for event_id, error in answer.rejected:
            if event_id in sent:
                kind = next(e.type for e in batch if e.id == event_id)
                log.error("replication_event_rejected", event_id=event_id, type=kind, error=error[:200],
                          check="the central refused this event for good; it is acknowledged so the queue moves on")
        ids = [e.id for e in batch if e.id in listed]
        await asyncio.to_thread(self.outbox.ack, ids)
        dup = sent & set(answer.duplicates)
        rej = sent & {i for i, _ in answer.rejected}
        self.state.sent += len(ids)
        self.state.duplicates += len(dup)
        self.state.rejected += len(rej)
        if len(ids) < len(batch):
            log.info("replication_partial", sent=len(batch), acknowledged=len(ids))
        return len(ids)

    async def drain(self, *, sleep: Sleep | None = None) -> int:
        """Send batches until nothing is pending; returns events acknowledged. Raises like `send_batch`."""
        total = 0
        try:
            while n := await self.send_batch(sleep=sleep):
                total += n
        finally:
            await self.refresh_depth()
        return total

    async def refresh_depth(self) -> None:
        def read() -> tuple[int, str | None]:
            return self.outbox.depth(), self.outbox.oldest_pending_at()

        self.state.depth, self.state.oldest_pending_at = await asyncio.to_thread(read)

    def _mark(self, *, online: bool, error: str | None) -> None:
        state = self.state
        state.last_error = error
        if state.online is not online:
            state.online, state.since = online, self.clock()
            if online:
                log.info("replication_online", depth=state.depth)
            else:
                log.warning("replication_offline", error=error, depth=state.depth)

    async def run(self, *, sleep: Sleep = asyncio.sleep) -> None:
        """Until cancelled. Idle: look again every `replicate_idle_s`. Failing: jittered back-off
        (tenacity inside each batch), then up to `retry_max_wait_s` between rounds."""
        reported: str | None = None
        while True:
            try:
                await self.drain(sleep=sleep)
                reported = None
                await sleep(self.section.replicate_idle_s)
            except BatchTooLarge:
                continue  # already smaller; try again at once
            except UpstreamError as e:
                if str(e) != reported and not isinstance(e, UpstreamUnavailable):
                    log.error("replication_failed", error=str(e), depth=self.state.depth)
                reported = str(e)
                await sleep(random.uniform(0.5, 1.0) * self.settings.retry_max_wait_s)


async def run_replication(replicator: Replicator, *, sleep: Sleep = asyncio.sleep) -> None:
    """The daemon's task: `asyncio.create_task(run_replication(replicator))`; cancel it to stop."""
    await replicator.run(sleep=sleep)
