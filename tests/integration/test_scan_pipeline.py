"""The scan pipeline's one ordering rule: the audit row that explains the relay is on disk (committed,
readable by another connection) before the relay moves, and a row that cannot be written moves
nothing. Twice: on the unit itself (bridge/service/scan_pipeline.py on the builder's real parts,
watching the relay's MockFactory pin go active), and through a real daemon in-process. A real
SQLite outbox and MockFactory pins throughout."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
import time
from datetime import timedelta
from pathlib import Path

import pytest
import structlog.testing
from gpiozero.pins.mock import MockFactory

from bridge.inputs.base import Scan
from bridge.service.clock_watch import ClockWatch
from bridge.service.health import Health
from bridge.service.parts import build_parts
from bridge.service.scan_pipeline import ScanJob, ScanPipeline
from bridge.service.worker import Worker
from bridge.state.outbox import OutboxWriteError
from tests.support.harness import SetClock, Site, door_records, make_config, running
from verifier.types import Source

READER = "R-pipe"
CARD = "6B06C2A25E99C68EDCBE"  # door_records: user_ok's card, granted at zone_a


def _verify_rows(audit: Path) -> list[str]:
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as c:
        return [row[0] for row in c.execute("SELECT body FROM events WHERE type = 'VERIFY' ORDER BY seq")]


async def test_the_decision_row_is_on_disk_before_the_relay_moves(tmp_path: Path) -> None:
    site = Site()
    site.install(tmp_path, door_records(READER))
    async with running(make_config(tmp_path, site, []), clock=SetClock()) as (daemon, factory):
        daemon.parts.reader_door[READER] = "main"
        relay = daemon.doors["main"]
        seen_at_pulse: list[list[str]] = []
        pulse = relay.pulse

        def watched_pulse() -> None:
            assert not factory.pin(17).state, "the relay is still released when pulse() is called"
            seen_at_pulse.append(_verify_rows(tmp_path / "audit.db"))
            pulse()

        relay.pulse = watched_pulse  # type: ignore[method-assign]
        decision = await daemon.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))
        assert decision.granted
        assert len(seen_at_pulse) == 1
        rows = seen_at_pulse[0]
        assert len(rows) == 1 and '"decision":"GRANT"' in rows[0].replace(" ", "")


async def test_a_row_that_cannot_be_written_moves_nothing(tmp_path: Path) -> None:
    site = Site()
    site.install(tmp_path, door_records(READER))
    async with running(make_config(tmp_path, site, []), clock=SetClock()) as (daemon, factory):
        daemon.parts.reader_door[READER] = "main"

        def full_disk(*_a, **_kw):
            raise OutboxWriteError("database or disk is full")

        daemon.parts.outbox.append_many = full_disk  # type: ignore[method-assign]
        with pytest.raises(Exception):
            await daemon.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))
        assert not any(s.state for s in factory.pin(17).states), "fail-secure: the relay never moved"


# --- the rule on the unit itself: a ScanPipeline on real parts, no daemon around it ---------------


class _PipelineRig:
    """A ScanPipeline with the builder's real parts (SQLite outbox on a tmp file, MockFactory pins)
    and its own decision worker: what the daemon wires, without the daemon."""

    def __init__(self, state: Path, site: Site, factory: MockFactory) -> None:
        config = make_config(state, site, [])
        self.site = site
        self.clock = SetClock()
        self.watch = ClockWatch(self.clock, state)
        self.worker: Worker[ScanJob] = Worker(lambda jobs: self.pipeline.decide_batch(jobs))
        self.parts = build_parts(config, doors={}, clock=self.watch.now, clock_watch=self.watch,
                                 clock_trusted=lambda: True, submit=self.worker.submit, pin_factory=factory,
                                 extra_inputs=[], adapters=[], door_event_listeners=[])
        self.parts.reader_door[READER] = "main"
        health = Health(config, self.parts, self.watch, self.watch.now, mqtt_status=lambda: None)
        self.pipeline = ScanPipeline(config, self.parts, health, self.worker, self.watch.now, lambda: True, [])

    def close(self) -> None:
        self.worker.submit(self.parts.close_storage).result()
        self.worker.shutdown()
        self.parts.close_hardware()


@contextlib.contextmanager
def pipeline_rig(state: Path, *readers: str) -> Iterator[tuple[_PipelineRig, MockFactory]]:
    """A `_PipelineRig` on a site with a door at each of `readers` (default READER), closed after."""
    site = Site()
    site.install(state, [r for reader in readers or (READER,) for r in door_records(reader)])
    factory = MockFactory()
    rig = _PipelineRig(state, site, factory)
    try:
        yield rig, factory
    finally:
        rig.close()
        factory.reset()


@contextlib.contextmanager
def writes_refused(rig: _PipelineRig) -> Iterator[None]:
    rig.parts.outbox.conn.execute("PRAGMA query_only = 1")  # every write now fails inside SQLite
    try:
        yield
    finally:
        rig.parts.outbox.conn.execute("PRAGMA query_only = 0")


async def test_the_pipeline_commits_the_row_before_the_relay_pin_goes_active(tmp_path: Path) -> None:
    with pipeline_rig(tmp_path) as (rig, factory):
        pin = factory.pin(17)
        rows_when_active: list[list[str]] = []
        change = pin._change_state

        def watched(value: bool) -> bool:
            if value:  # the line goes active: what does another connection read in audit.db now?
                rows_when_active.append(_verify_rows(tmp_path / "audit.db"))
            return change(value)

        pin._change_state = watched  # type: ignore[method-assign]
        decision = await rig.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))
        assert decision.granted and rig.parts.doors["main"].pulses == 1
        assert len(rows_when_active) == 1
        assert len(rows_when_active[0]) == 1 and '"decision":"GRANT"' in rows_when_active[0][0].replace(" ", "")


async def test_the_pipeline_moves_no_pin_when_the_row_cannot_be_written(tmp_path: Path) -> None:
    with pipeline_rig(tmp_path) as (rig, factory):
        with writes_refused(rig), pytest.raises(Exception):
            await rig.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))
        assert not any(s.state for s in factory.pin(17).states), "fail-secure: the relay never moved"
        assert rig.parts.doors["main"].pulses == 0


# --- the direct way: a scan only the cache decides needs no turn of the event loop ---------------


def _from_an_input_thread(pipeline: ScanPipeline, scans: list[Scan]) -> None:
    t = threading.Thread(target=lambda: [pipeline.emit(s) for s in scans], name="serial-test")
    t.start()
    t.join()


def _wait_for(check, timeout: float = 5.0) -> bool:
    """Blocks the calling thread (the test's event loop, on purpose) until `check()` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def test_a_scan_the_cache_alone_decides_is_decided_while_the_event_loop_is_busy(tmp_path: Path) -> None:
    """At 1,000 scans/s the hop through the loop (call_soon_threadsafe, a task, a chain of
    futures back) was most of the loop's time; a busy loop also held every offline decision."""
    with pipeline_rig(tmp_path) as (rig, factory):
        _from_an_input_thread(rig.pipeline, [Scan(READER, Source.CARD, CARD.encode(), None, time.monotonic())])
        assert _wait_for(lambda: rig.parts.doors["main"].pulses == 1), "decided and pulsed without the loop"
        assert rig.pipeline.tasks == set()
        assert _verify_rows(tmp_path / "audit.db") and rig.pipeline._in_flight_total == 0


async def test_a_direct_scan_that_cannot_be_recorded_is_logged_and_moves_nothing(tmp_path: Path) -> None:
    with pipeline_rig(tmp_path) as (rig, factory):
        with writes_refused(rig), structlog.testing.capture_logs() as logs:
            _from_an_input_thread(rig.pipeline, [Scan(READER, Source.CARD, CARD.encode())])
            assert _wait_for(lambda: any(e["event"] == "decision_failed" for e in logs))
        (failed,) = [e for e in logs if e["event"] == "decision_failed"]
        assert failed["reader"] == READER and failed["relay"] == "not pulsed"
        assert not any(s.state for s in factory.pin(17).states) and rig.parts.doors["main"].pulses == 0
        assert rig.pipeline._in_flight_total == 0, "the place is given back"


async def test_the_direct_way_keeps_the_per_reader_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.service import scan_pipeline as pipeline_mod

    monkeypatch.setattr(pipeline_mod, "MAX_SCANS_IN_FLIGHT", 60)
    monkeypatch.setattr(pipeline_mod, "MAX_SCANS_IN_FLIGHT_PER_READER", 40)
    gate = threading.Event()
    with pipeline_rig(tmp_path, READER, "R-2") as (rig, _factory):
        rig.worker.submit(gate.wait)  # nothing is decided until the gate opens: every scan waits
        try:
            _from_an_input_thread(rig.pipeline, [Scan(READER, Source.PHONE_QR, b"junk junk")] * 500)
            _from_an_input_thread(rig.pipeline, [Scan("R-2", Source.CARD, CARD.encode(), "card")] * 20)
        finally:
            gate.set()  # else closing the rig would wait for the worker for ever
        assert _wait_for(lambda: rig.pipeline._in_flight_total == 0)
        assert rig.pipeline.dropped_by_reader == {READER: 460}
        assert rig.pipeline.health.stats.readers["R-2"].scans == 20


async def test_modes_are_applied_after_a_batch_only_when_it_could_change_one(tmp_path: Path) -> None:
    """A batch changes a door's effective mode only by a first-person-in GRANT or by deciding
    from a new cache version; every other batch leaves the modes to the one-second timer
    (re-applying them after each batch cost more than deciding the card)."""
    with pipeline_rig(tmp_path) as (rig, _factory):
        applied: list[int] = []
        apply = rig.parts.modes.apply

        def counted() -> None:
            applied.append(rig.parts.verifier.cache.meta.version)
            apply()

        rig.parts.modes.apply = counted  # type: ignore[method-assign]
        first = await rig.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))  # the first batch builds the modes
        assert first.granted
        before = len(applied)
        for _ in range(3):
            rig.clock.t += timedelta(minutes=1)  # past the replay window: each scan is decided afresh
            assert (await rig.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))).granted
            assert not (await rig.pipeline.handle(Scan(READER, Source.CARD, b"0000DEADBEEF"))).granted
        assert len(applied) == before, "six batches that could change no mode re-applied the modes"
        rig.site.install(tmp_path, door_records(READER))  # version 2, committed by another connection
        rig.clock.t += timedelta(minutes=1)
        assert (await rig.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))).cache_version == 2
        assert applied[before:] == [2], "the batch that decided from a new cache version applied its modes once"
