"""Audit replication from a real outbox (SQLite file) to a real loopback central.

The central's store (`fake.events`, id → event in arrival order) is the ground truth: after any
mix of drops, partial answers, outages and restarts it must hold every outbox event exactly once,
in outbox order.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from structlog.testing import capture_logs

from bridge.state.outbox import Outbox
from bridge.central.replicator import Replicator, run_replication
from bridge.upstream.central import build_central
from bridge.config.upstream import CentralSection, HttpSettings
from bridge.upstream.errors import UpstreamProtocolError, UpstreamRejected, UpstreamUnavailable
from tests.support.fakes.central import API_KEY, FakeCentral

pytest_plugins = ["tests.support.fakes.fixtures"]

FAST = HttpSettings(retry_max_wait_s=0.01, retry_deadline_s=0.3, breaker_failures=1000)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def fill(outbox: Outbox, n: int, type_: str = "VERIFY") -> list[str]:
    return [outbox.append(type_, {"decision": "GRANT", "readerId": "R1", "n": i},
                          at=T0 + timedelta(seconds=i)).id for i in range(n)]


class Bridge:
    def __init__(self, fake: FakeCentral, key_file: Path, tmp_path: Path, **section: Any) -> None:
        self.fake = fake
        self.path = tmp_path / "audit.db"
        self.outbox = Outbox(self.path)
        self.section = CentralSection(base_url=fake.url, api_key_file=key_file, **section)
        self.now = T0 + timedelta(hours=1)

    def restart(self) -> None:
        self.outbox.close()
        self.outbox = Outbox(self.path)

    def run(self, body: Callable[[Replicator], Awaitable[Any]], settings: HttpSettings = FAST) -> Any:
        async def scenario() -> Any:
            client = build_central(self.section, settings, bridge_id=self.fake.bridge_id)
            try:
                return await body(Replicator(client, self.outbox, self.section, settings, clock=lambda: self.now))
            finally:
                await client.aclose()

        return asyncio.run(scenario())

    def drain(self, settings: HttpSettings = FAST) -> tuple[int, Replicator]:
        async def body(r: Replicator) -> tuple[int, Replicator]:
            return await r.drain(), r

        result: tuple[int, Replicator] = self.run(body, settings)
        return result

    def batches(self) -> list[list[str]]:
        return [[e["id"] for e in r.json["events"]] for r in self.fake.server.requests if r.method == "POST"]


@pytest.fixture
def bridge(fake_central: FakeCentral, central_key_file: Path, tmp_path: Path) -> Bridge:
    return Bridge(fake_central, central_key_file, tmp_path)


def test_drains_in_order_in_batches(fake_central: FakeCentral, central_key_file: Path, tmp_path: Path) -> None:
    bridge = Bridge(fake_central, central_key_file, tmp_path, batch_size=40)
    ids = fill(bridge.outbox, 100)
    acked, replicator = bridge.drain()
    assert acked == 100
    assert [len(b) for b in bridge.batches()] == [40, 40, 20]
    assert [i for b in bridge.batches() for i in b] == ids
    assert list(fake_central.events) == ids
    assert bridge.outbox.depth() == 0
    state = replicator.state
    assert (state.online, state.depth, state.oldest_pending_at, state.sent) == (True, 0, None, 100)


def test_events_go_as_documented(bridge: Bridge) -> None:
    (event_id,) = fill(bridge.outbox, 1)
    bridge.drain()
    (request,) = [r for r in bridge.fake.server.requests if r.method == "POST"]
    assert request.path == f"/api/bridge/v1/bridges/{bridge.fake.bridge_id}/events"
    assert request.headers["authorization"].startswith("Bearer cbk_")
    (wire,) = request.json["events"]
    assert wire == {"id": event_id, "at": "2026-06-01T12:00:00.000Z", "type": "VERIFY",
                    "decision": "GRANT", "readerId": "R1", "n": 0}


def test_connection_dropped_mid_batch_loses_nothing_and_stores_nothing_twice(
    fake_central: FakeCentral, central_key_file: Path, tmp_path: Path
) -> None:
    bridge = Bridge(fake_central, central_key_file, tmp_path, batch_size=50)
    ids = fill(bridge.outbox, 70)
    bridge.fake.drop_mid_batch(after=20)  # stores 20 of the first 50, then hangs up
    acked, replicator = bridge.drain()
    assert list(bridge.fake.events) == ids  # each id once, in order
    assert bridge.fake.duplicates_seen == ids[:20]  # the resend was answered as duplicates
    assert bridge.outbox.depth() == 0
    assert replicator.state.duplicates == 20
    first, resent = bridge.batches()[:2]
    assert first == resent == ids[:50]


def test_only_listed_ids_are_acked_and_the_rest_resent_in_order(bridge: Bridge) -> None:
    ids = fill(bridge.outbox, 25)
    bridge.fake.accept_at_most = 10  # a central that stores part of each batch and says so
    acked, _ = bridge.drain()
    assert acked == 25
    assert [b[0] for b in bridge.batches()] == [ids[0], ids[10], ids[20]]
    assert list(bridge.fake.events) == ids
    assert bridge.fake.duplicates_seen == []


def test_restart_resumes_from_what_sqlite_says_is_pending(
    fake_central: FakeCentral, central_key_file: Path, tmp_path: Path
) -> None:
    bridge = Bridge(fake_central, central_key_file, tmp_path, batch_size=50)
    ids = fill(bridge.outbox, 70)

    async def one_batch(r: Replicator) -> int:
        return await r.send_batch()

    assert bridge.run(one_batch) == 50
    bridge.restart()  # a new process: a fresh Outbox and Replicator on the same audit.db
    assert bridge.outbox.depth() == 20
    acked, _ = bridge.drain()
    assert acked == 20
    assert bridge.batches()[1] == ids[50:]  # nothing already acknowledged is sent again
    assert list(bridge.fake.events) == ids


def test_ack_lost_in_a_crash_is_resent_and_deduplicated(bridge: Bridge) -> None:
    """The central stored a batch but the bridge died before committing the ack."""
    ids = fill(bridge.outbox, 30)
    bridge.fake.drop_mid_batch(after=30)  # stores all 30, the answer never arrives

    async def attempt(r: Replicator) -> None:
        async def central_gone(_: float) -> None:  # every retry fails too: the bridge gives up
            bridge.fake.server.drop_connections()

        with pytest.raises(UpstreamUnavailable):
            await r.send_batch(sleep=central_gone)

    bridge.run(attempt)
    assert len(bridge.fake.events) == 30 and bridge.outbox.depth() == 30
    bridge.fake.server.heal()
    bridge.restart()
    bridge.drain()
    assert bridge.outbox.depth() == 0
    assert list(bridge.fake.events) == ids
    assert bridge.fake.duplicates_seen == ids


def test_central_down_keeps_events_pending_then_drains(bridge: Bridge) -> None:
    ids = fill(bridge.outbox, 50)
    bridge.fake.server.go_down()
    with pytest.raises(UpstreamUnavailable):
        bridge.drain()
    assert bridge.outbox.depth() == 50
    bridge.fake.server.come_up()
    acked, _ = bridge.drain()
    assert acked == 50 and list(bridge.fake.events) == ids


def test_state_reports_offline_since_and_oldest_pending_age(bridge: Bridge) -> None:
    fill(bridge.outbox, 5)

    async def body(r: Replicator) -> dict[str, Any]:
        bridge.fake.server.fail_with(503)
        with pytest.raises(UpstreamUnavailable):
            await r.drain()
        offline = r.state.as_status(bridge.now)
        bridge.fake.server.heal()
        bridge.now += timedelta(minutes=5)
        await r.drain()
        return offline

    with capture_logs() as logs:
        offline = bridge.run(body)
    assert offline["online"] is False and offline["since"] == "2026-06-01T13:00:00+00:00"
    assert offline["depth"] == 5 and offline["oldest_pending_age_s"] == 3600.0
    assert "503" in offline["last_error"]
    events = [e["event"] for e in logs if e["event"].startswith("replication_")]
    assert events == ["replication_offline", "replication_online"]


def test_wrong_key_is_rejected_and_nothing_is_acked(bridge: Bridge) -> None:
    fill(bridge.outbox, 3)
    bridge.fake.api_keys = set()
    with pytest.raises(UpstreamRejected, match="api_key_file"):
        bridge.drain()
    assert bridge.outbox.depth() == 3
    assert len(bridge.fake.server.requests) == 1  # a refusal is not retried


def test_events_the_central_rejects_for_good_are_acked_and_logged(bridge: Bridge) -> None:
    fill(bridge.outbox, 2)
    (bad,) = fill(bridge.outbox, 1, type_="DOOR_FORCED")
    bridge.fake.reject_types = {"DOOR_FORCED"}
    with capture_logs() as logs:
        acked, replicator = bridge.drain()
    assert acked == 3 and bridge.outbox.depth() == 0 and replicator.state.rejected == 1
    (line,) = [e for e in logs if e["event"] == "replication_event_rejected"]
    assert line["event"] == "replication_event_rejected" and line["type"] == "DOOR_FORCED"
    assert bad not in bridge.fake.events


def test_a_413_halves_the_batch(fake_central: FakeCentral, central_key_file: Path, tmp_path: Path) -> None:
    bridge = Bridge(fake_central, central_key_file, tmp_path, batch_size=1000)
    ids = fill(bridge.outbox, 60)
    fake_central.max_batch = 20

    async def body(r: Replicator) -> None:
        task = asyncio.create_task(run_replication(r, sleep=lambda s: asyncio.sleep(0)))
        while len(fake_central.events) < 60 or (await asyncio.to_thread(bridge.outbox.depth)) > 0:
            await asyncio.sleep(0.01)
        task.cancel()

    bridge.run(body)
    assert [len(b) for b in bridge.batches()] == [60, 30, 15, 15, 15, 15]
    assert list(fake_central.events) == ids


def test_an_answer_acknowledging_nothing_is_a_protocol_error(bridge: Bridge) -> None:
    fill(bridge.outbox, 2)
    bridge.fake.server.respond_raw(b'{"stored": [], "duplicates": []}')
    with pytest.raises(UpstreamProtocolError, match="none of 2"):
        bridge.drain()
    assert bridge.outbox.depth() == 2


def test_run_replication_ships_events_appended_while_it_runs(bridge: Bridge) -> None:
    early = fill(bridge.outbox, 3)

    async def body(r: Replicator) -> list[str]:
        task = asyncio.create_task(run_replication(r, sleep=lambda s: asyncio.sleep(0.005)))
        while len(bridge.fake.events) < 3:
            await asyncio.sleep(0.005)
        # Appends come from the decision worker thread in the daemon.
        late = await asyncio.to_thread(fill, bridge.outbox, 4)
        while len(bridge.fake.events) < 7 or (await asyncio.to_thread(bridge.outbox.depth)) > 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return late

    late = bridge.run(body)
    assert list(bridge.fake.events) == early + late
    assert bridge.outbox.depth() == 0


def test_a_413_for_a_single_event_is_a_protocol_error_not_a_spin(
    fake_central: FakeCentral, central_key_file: Path, tmp_path: Path
) -> None:
    bridge = Bridge(fake_central, central_key_file, tmp_path, batch_size=1)
    fill(bridge.outbox, 1)
    fake_central.max_batch = 0
    with pytest.raises(UpstreamProtocolError, match="even one event"):
        bridge.drain()
    assert bridge.outbox.depth() == 1


def test_no_api_key_in_logs_or_errors_when_the_central_refuses(bridge: Bridge) -> None:
    fill(bridge.outbox, 2)
    bridge.fake.api_keys = set()
    seen: list[str] = []

    async def body(r: Replicator) -> None:
        async def sleep(_: float) -> None:
            seen.append(str(r.state.last_error))
            if len(seen) >= 2:
                raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await run_replication(r, sleep=sleep)

    with capture_logs() as logs:
        bridge.run(body)
    text = repr(logs) + repr(seen)
    assert "HTTP 401" in text
    assert API_KEY not in text and API_KEY[4:20] not in text
