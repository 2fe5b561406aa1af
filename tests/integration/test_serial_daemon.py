"""Issue acceptance through a real pseudo-terminal: the daemon opens the /dev/pts/N path itself."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.support.harness import SetClock, T0, Site, door_records, ever_high, make_config, relay_pulses, running, wait_for
from tests.support.service import Pty
from verifier.types import Reason

READER = "BRIDGE-serial"


@pytest.fixture
def site_dir(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    return site, tmp_path


async def _decisions(daemon, n):
    await wait_for(lambda: daemon.health.stats.decisions >= n, what=f"{n} decisions")
    await daemon.quiesce()
    return [e.body for e in daemon.parts.outbox.recent(100) if e.type == "VERIFY"]


async def test_serial_scans_decide_pulse_and_replay(site_dir):
    site, state = site_dir
    pty = Pty()
    clock = SetClock()
    config = make_config(state, site, [{"type": "serial", "id": READER, "port": pty.path, "reconnect_s": 0.1}])
    try:
        async with running(config, clock=clock) as (daemon, factory):
            relay = factory.pin(17)
            serial_input = daemon.parts.inputs[0]
            await wait_for(serial_input.connected.is_set, what="serial port open")
            assert not ever_high(relay), "relay energised at start"

            pty.type("6B06C2A25E99C68EDCBE")
            events = await _decisions(daemon, 1)
            assert events[-1]["decision"] == "GRANT" and events[-1]["userName"] == "Layla Hassan"
            await wait_for(lambda: len(relay_pulses(relay)) == 1, what="relay pulse to end")
            (pulse,) = relay_pulses(relay)
            assert 0.3 <= pulse < 1.3, f"pulse lasted {pulse:.3f}s, configured 0.3s"

            # Same card, same reader, 1 s later: the original decision, replay=true, no second pulse.
            clock.t = T0 + timedelta(seconds=1)
            pty.type("6b:06:c2:a2:5e:99:c6:8e:dc:be")
            events = await _decisions(daemon, 2)
            assert events[-1]["decision"] == "GRANT" and events[-1]["replay"] is True

            clock.t = T0 + timedelta(seconds=5)
            pty.type("04A22C1A7B3F80")
            events = await _decisions(daemon, 3)
            assert (events[-1]["decision"], events[-1]["reason"]) == ("DENY", Reason.GRANT_REVOKED)

            pty.type("0A1B2C3D4E5F")
            events = await _decisions(daemon, 4)
            assert (events[-1]["decision"], events[-1]["reason"]) == ("DENY", Reason.OUT_OF_DATE_WINDOW)

            pty.type("\x1b[2J garbage")
            events = await _decisions(daemon, 5)
            assert events[-1]["reason"] == Reason.MALFORMED_CREDENTIAL

            await asyncio.sleep(0.5)
            assert len(relay_pulses(relay)) == 1, "only the first GRANT may pulse the relay"
            assert not relay.state
    finally:
        pty.close()


async def test_serial_reader_survives_device_loss(site_dir, tmp_path):
    """The configured path is a symlink (as /dev/serial/by-id is); the device goes and comes back."""
    site, state = site_dir
    link = tmp_path / "by-id-scanner"
    first = Pty()
    link.symlink_to(first.path)
    config = make_config(state, site, [{"type": "serial", "id": READER, "port": str(link), "reconnect_s": 0.1}])
    async with running(config, clock=SetClock()) as (daemon, factory):
        serial_input = daemon.parts.inputs[0]
        await wait_for(serial_input.connected.is_set, what="serial port open")
        first.type("6B06C2A25E99C68EDCBE")
        await wait_for(lambda: daemon.health.stats.decisions == 1, what="first decision")

        first.close()  # unplugged: reads fail with EIO
        link.unlink()
        await wait_for(lambda: not serial_input.connected.is_set(), what="loss detected")
        second = Pty()
        link.symlink_to(second.path)
        try:
            await wait_for(serial_input.connected.is_set, what="reconnect")
            second.type("04A22C1A7B3F80")
            await wait_for(lambda: daemon.health.stats.decisions == 2, what="decision after replug")
        finally:
            second.close()
    assert daemon.health.stats.readers[READER].last_reason == Reason.GRANT_REVOKED


async def test_stopping_mid_pulse_releases_the_relay_at_once(site_dir):
    """SIGTERM's path (Daemon.stop): the relay is released first, not when the pulse would end."""
    from bridge.inputs.base import Scan
    from verifier.types import Source

    site, state = site_dir
    config = make_config(state, site, [], doors={"main": {"relay_pin": 17, "pulse_s": 30.0}})
    async with running(config, clock=SetClock()) as (daemon, factory):
        daemon.parts.reader_door[READER] = "main"
        assert (await daemon.pipeline.handle(Scan(READER, Source.CARD, b"6B06C2A25E99C68EDCBE"))).granted
        relay = factory.pin(17)
        assert relay.state, "a 30 s pulse is under way"
        await daemon.stop("SIGTERM")
        assert relay.state is False
        held = relay_pulses(relay)
        assert len(held) == 1 and held[0] < 5.0, "released by the stop, long before 30 s"
        # running() calls stop() again on exit: it must be harmless


async def test_when_the_audit_row_cannot_be_written_the_relay_stays_released(site_dir, monkeypatch):
    """Fail-secure: no committed row, no pulse; the technician gets an error line."""
    from structlog.testing import capture_logs

    from bridge.inputs.base import Scan
    from verifier.types import Source

    site, state = site_dir
    config = make_config(state, site, [])
    with capture_logs() as logs:
        async with running(config, clock=SetClock()) as (daemon, factory):
            daemon.parts.reader_door[READER] = "main"

            def disk_full(*a, **k):
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(daemon.parts.outbox, "append_many", disk_full)
            daemon.pipeline.emit(Scan(READER, Source.CARD, b"6B06C2A25E99C68EDCBE"))
            await wait_for(lambda: any(e["event"] == "decision_failed" for e in logs), what="error line")
            assert not ever_high(factory.pin(17))
    failed = next(e for e in logs if e["event"] == "decision_failed")
    assert failed["log_level"] == "error" and "No space left" in failed["error"] and failed["relay"] == "not pulsed"
