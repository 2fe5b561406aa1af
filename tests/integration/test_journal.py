"""Journal fields through journald's native protocol: decisions and door events from a real daemon
(in this process), received first on a plain datagram socket we parse ourselves, then by a real
systemd-journald (a journal namespace of its own) and read back with journalctl's field filters."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import structlog

from bridge.service import journal
from bridge.service import logsetup
from bridge.inputs.base import Scan
from tests.support.harness import Site, SteppingClock, door_records, make_config, running, wait_for
from verifier.types import Source

READER = "R1"
VALID, REVOKED = "6B06C2A25E99C68EDCBE", "04A22C1A7B3F80"
JOURNALD = "/lib/systemd/systemd-journald"




def parse(datagram: bytes) -> dict[str, str]:
    """The native protocol, read independently of bridge.service.journal: KEY=value lines, or KEY\\n<u64 LE len><bytes>\\n."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            value = datagram[nl + 9:nl + 9 + size]
            assert datagram[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def restore_logging():
    yield
    structlog.reset_defaults()


def config(tmp_path: Path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    site = Site()
    site.install(tmp_path, door_records(READER))
    return make_config(tmp_path, site, [{"type": "console", "id": READER}],
                       doors={"main": {"relay_pin": 17, "pulse_s": 0.2, "door_switch_pin": 22,
                                       "forced_open_grace_s": 0.1}})


async def scripted(tmp_path: Path) -> None:
    async with running(config(tmp_path), clock=SteppingClock()) as (daemon, factory):
        factory.pin(22).drive_low()
        await wait_for(lambda: daemon.parts.door_monitors["main"].state()["position"] == "closed", what="closed")
        for raw in (VALID, REVOKED):
            await daemon.pipeline.handle(Scan(READER, Source.CARD, raw.encode()))
        await wait_for(lambda: not factory.pin(17).state, what="relay released")
        await asyncio.sleep(0.3)
        factory.pin(22).drive_high()  # forced open: a warning with DOOR=
        await wait_for(lambda: "forced_open" in daemon.parts.door_monitors["main"].alarms(), what="forced open")
        await daemon.quiesce()


async def test_every_line_carries_its_fields_to_a_real_socket_and_the_text_is_unchanged(tmp_path, restore_logging):
    path = str(tmp_path / "journal.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(10)
    entries: list[dict[str, str]] = []

    def receive() -> None:  # read as journald does, as entries come (a datagram queue holds only a few)
        while True:
            try:
                entries.append(parse(sink.recv(65536)))
            except (TimeoutError, OSError):
                return
            if entries[-1].get("DOOR_BRIDGE_EVENT") == "scenario_done":
                return

    reader = threading.Thread(target=receive)
    reader.start()
    logsetup.configure("info", "console", journal_socket=path)
    await scripted(tmp_path / "state")
    structlog.get_logger().info("scenario_done")
    await asyncio.to_thread(reader.join)
    sink.close()
    assert entries[-1]["DOOR_BRIDGE_EVENT"] == "scenario_done"

    decisions = [e for e in entries if e["DOOR_BRIDGE_EVENT"] == "decision"]
    assert len(decisions) == 2
    grant, deny = decisions
    assert {k: grant.get(k) for k in ("READER_ID", "DOOR", "DECISION", "SOURCE", "CACHE_VERSION", "UPSTREAM",
                                      "PRIORITY", "SYSLOG_IDENTIFIER")} == {
        "READER_ID": READER, "DOOR": "main", "DECISION": "GRANT", "SOURCE": "CARD", "CACHE_VERSION": "1",
        "UPSTREAM": "none", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "door-bridge"}
    assert "REASON" not in grant  # a grant has no reason: no empty field to match on
    assert (deny["DECISION"], deny["REASON"]) == ("DENY", "GRANT_REVOKED")
    # `journalctl -o cat` prints MESSAGE: the same line as the console renderer, without the level column.
    assert grant["MESSAGE"].startswith(f"decision reader={READER} door=main source=CARD decision=GRANT reason=- ")
    assert "cache_version=1" in grant["MESSAGE"] and not grant["MESSAGE"].startswith("<")
    forced = [e for e in entries if e["DOOR_BRIDGE_EVENT"] == "door_forced_open"]
    assert forced and forced[0]["DOOR"] == "main" and forced[0]["PRIORITY"] == "4"
    door_events = [e for e in entries if e["DOOR_BRIDGE_EVENT"] == "door_event"]
    assert {e["DOOR"] for e in door_events} == {"main"} and door_events
    assert VALID not in repr(entries) and REVOKED not in repr(entries)


def test_values_with_newlines_use_the_length_prefixed_form():
    data = journal.encode({"MESSAGE": "two\nlines", "READER_ID": "R1"})
    assert data.startswith(b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n")
    assert parse(data) == {"MESSAGE": "two\nlines", "READER_ID": "R1"}


def test_a_journal_that_does_not_answer_falls_back_to_stderr_with_the_priority_prefix(tmp_path, restore_logging):
    import io

    out = io.StringIO()
    logsetup.configure("info", "console", stream=out, journal_socket=str(tmp_path / "nobody-listens"))
    structlog.get_logger().warning("upstream_lost", error="x", check="network")
    assert out.getvalue() == "<4>upstream_lost error=x check=network\n"


def test_stderr_that_is_not_the_journal_stream_gets_no_native_entries(tmp_path, monkeypatch):
    # tests/support/service.py sets JOURNAL_STREAM=8:1234 for subprocess daemons whose stderr is a pipe:
    # those must keep writing stderr even on a host where journald's socket exists.
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert not journal.under_journal()
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert journal.under_journal()


@pytest.fixture
def journald(tmp_path):
    """A real systemd-journald serving a journal namespace of its own (no systemd as PID 1 needed)."""
    if not os.path.exists(JOURNALD) or shutil.which("journalctl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-journald is not installed (apt-get install systemd; .ci/run does)")
        pytest.skip("systemd-journald is not installed")
    if os.geteuid() != 0:
        pytest.skip("a journald namespace needs root (the Debian guest of tests/system runs it under systemd)")
    namespace = f"dbtest{uuid.uuid4().hex[:10]}"
    proc = subprocess.Popen([JOURNALD, namespace], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sock = f"/run/systemd/journal.{namespace}/socket"
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.stderr.read().decode()[-400:]
            assert time.monotonic() < deadline, "journald did not create its socket"
            time.sleep(0.02)
        yield namespace, sock
    finally:
        proc.terminate()
        proc.wait(10)
        machine = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
        for d in (f"/run/systemd/journal.{namespace}", f"/var/log/journal/{machine}.{namespace}",
                  f"/run/log/journal/{machine}.{namespace}"):
            shutil.rmtree(d, ignore_errors=True)


def journalctl(namespace: str, *args: str) -> list[dict]:
    out = subprocess.run(["journalctl", f"--namespace={namespace}", "--no-pager", "-o", "json", *args],
                         capture_output=True, text=True, timeout=30)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


async def test_journalctl_filters_on_the_fields_of_a_real_journald(tmp_path, journald, restore_logging):
    namespace, sock = journald
    logsetup.configure("info", "console", journal_socket=sock)
    await scripted(tmp_path / "state")
    deadline = time.monotonic() + 10
    while len(journalctl(namespace, "DOOR_BRIDGE_EVENT=decision")) < 2:
        assert time.monotonic() < deadline, "journald did not store the decisions"
        time.sleep(0.1)
    revoked = journalctl(namespace, "REASON=GRANT_REVOKED")
    assert [(e["READER_ID"], e["DECISION"], e["DOOR"]) for e in revoked] == [(READER, "DENY", "main")]
    assert revoked[0]["_TRANSPORT"] == "journal" and revoked[0]["SYSLOG_IDENTIFIER"] == "door-bridge"
    warnings = journalctl(namespace, "DOOR=main", "-p", "warning")
    assert [e["DOOR_BRIDGE_EVENT"] for e in warnings] == ["door_forced_open"]
    cat = subprocess.run(["journalctl", f"--namespace={namespace}", "--no-pager", "-o", "cat", f"READER_ID={READER}",
                          "DECISION=GRANT"], capture_output=True, text=True, timeout=30).stdout
    assert cat.startswith(f"decision reader={READER} door=main source=CARD decision=GRANT reason=- ")
