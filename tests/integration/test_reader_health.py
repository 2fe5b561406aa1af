"""A reader that has failed shows in STATUS=, `door-bridge status` (and its exit code) and the journal.

Found in a real Debian guest (tests/system): with the distribution's python3-evdev every evdev
reader raised TypeError at start, and the service said READY with nothing else to see. Inputs here
are small stand-ins that fail the way a reader does (its `run` raises or returns); the daemon,
its status socket and the CLI are real.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge import cli
from bridge.service import reader_supervisor as supervisor_module
from bridge.inputs.base import Emit
from bridge.service.status_socket import StatusServer
from tests.support.harness import Site, door_records, make_config, running, wait_for


class BrokenReader:
    """Fails like evdev 1.6.1 did: a TypeError out of the device search, every time."""

    def __init__(self, reader_id: str) -> None:
        self.reader_id = reader_id
        self.runs = 0

    async def run(self, emit: Emit) -> None:
        self.runs += 1
        raise TypeError("list_devices() got an unexpected keyword argument 'writable'")


class FlakyReader(BrokenReader):
    """Fails once, then reads (waits) like a healthy reader."""

    async def run(self, emit: Emit) -> None:
        self.runs += 1
        if self.runs == 1:
            raise OSError(5, "Input/output error")
        await asyncio.Event().wait()


class IdleReader:
    def __init__(self, reader_id: str) -> None:
        self.reader_id = reader_id

    async def run(self, emit: Emit) -> None:
        await asyncio.Event().wait()


@pytest.fixture
def config(tmp_path: Path) -> Any:
    site = Site()
    (tmp_path / "state").mkdir()
    site.install(tmp_path / "state", door_records("qr1"))
    return make_config(tmp_path / "state", site, [])


async def test_a_failed_reader_makes_status_degraded_and_says_what_failed(config: Any) -> None:
    with capture_logs() as logs:
        async with running(config, inputs=[BrokenReader("qr1"), IdleReader("kp1")]) as (daemon, _):
            await wait_for(lambda: any(e["event"] == "reader_failed" for e in logs), what="reader_failed")
            line = daemon.health.status_line()
            snap = daemon.health.snapshot()
    assert line.startswith("DEGRADED: reader qr1 failed; "), line
    assert snap["readers"]["qr1"]["state"] == "failed"
    assert "TypeError" in snap["readers"]["qr1"]["last_error"]
    assert snap["readers"]["kp1"]["state"] == "ok"
    assert snap["health"] == {"state": "degraded", "problems": ["reader qr1 failed"]}
    failed = next(e for e in logs if e["event"] == "reader_failed")
    assert failed["log_level"] == "error" and failed["reader"] == "qr1" and "TypeError" in failed["error"]
    assert "doctor" in failed["check"] and failed["retry_s"] > 0
    assert not any(e["event"] == "no_reader_working" for e in logs)  # kp1 still reads


async def test_no_reader_working_is_an_error_of_its_own_and_the_door_keeps_running(config: Any) -> None:
    with capture_logs() as logs:
        async with running(config, inputs=[BrokenReader("qr1")]) as (daemon, _):
            await wait_for(lambda: any(e["event"] == "no_reader_working" for e in logs), what="no_reader_working")
            line = daemon.health.status_line()
            relay = daemon.health.snapshot()["doors"]["main"]["relay"]
    assert line.startswith("DEGRADED: no reader working (qr1 failed); "), line
    assert relay == "released"
    alarm = next(e for e in logs if e["event"] == "no_reader_working")
    assert alarm["log_level"] == "error" and "REX" in alarm["effect"] and "journalctl" in alarm["check"]


async def test_a_failed_reader_is_retried_and_healthy_again_once_it_keeps_running(config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "READER_RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(supervisor_module, "READER_HEALTHY_AFTER_S", 0.2)
    flaky = FlakyReader("qr1")
    with capture_logs() as logs:
        async with running(config, inputs=[flaky]) as (daemon, _):
            await wait_for(lambda: flaky.runs == 2, what="a retry")
            assert daemon.health.snapshot()["readers"]["qr1"]["state"] == "failed"  # not healthy the moment it restarts
            await wait_for(lambda: daemon.health.snapshot()["readers"]["qr1"]["state"] == "ok", what="healthy again")
            assert not daemon.health.status_line().startswith("DEGRADED")
            assert daemon.health.snapshot()["readers"]["qr1"]["failures"] == 1
    assert any(e["event"] == "reader_recovered" and e["log_level"] == "info" for e in logs)


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dbrh-", dir="/tmp") as d:  # AF_UNIX path length
        monkeypatch.setenv("RUNTIME_DIRECTORY", d)
        yield Path(d)


@pytest.mark.parametrize(("health", "code"), [({"state": "ok", "problems": []}, 0),
                                               ({"state": "degraded", "problems": ["reader qr1 failed"]}, 3)])
def test_status_exit_code_is_3_when_degraded(runtime_dir: Path, capsys: pytest.CaptureFixture[str],
                                             health: dict[str, Any], code: int) -> None:
    document = {"bridge_id": "B", "health": health,
                "readers": {"qr1": {"type": "evdev", "state": "failed" if code else "ok", "last_error": "TypeError: x"}}}

    async def main() -> int:
        async with StatusServer(runtime_dir / "status.sock", lambda: document):
            return await asyncio.to_thread(cli.main, ["status"])

    assert asyncio.run(main()) == code
    out = capsys.readouterr().out
    if code:
        assert "DEGRADED" in out and "reader qr1 failed" in out and "FAILED" in out
