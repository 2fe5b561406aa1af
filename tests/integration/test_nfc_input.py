"""The real `NfcInput` reading tags that another process emulates over nfcpy's udp driver.

No NFC hardware: `tests/support/nfc_tag_emulator.py` answers the reader's radio commands over loopback
UDP as a FeliCa (Type 3) tag or an ISO 14443 A card would, so the whole nfcpy stack (sensing, activation, NDEF read,
presence checks) runs for real. Every wait has a deadline; nothing asserts how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import ndef
import nfc
import nfc.clf
import nfc.tag
import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge.inputs.base import Scan
from bridge.inputs.nfc import (
    NfcReaderConfig,
    SameCardGate,
    TroubleLog,
    create,
    credential_text,
)
from tests.support.nfc_tag_emulator import free_udp_port
from verifier.types import Source

EMULATOR = Path(__file__).resolve().parents[1] / "support" / "nfc_tag_emulator.py"
READER = "BRIDGE-nfc"
DIGITAL_ID_URL = "https://id.example.org/verify.php?token=4f1c2a9e7b"
CREDENTIAL_JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c3ItNDIifQ.c2lnbmF0dXJl"
DEADLINE_S = 60.0


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log event, debug included, whatever level the suite configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def reader_config(port: int, **overrides: Any) -> NfcReaderConfig:
    # udp answers take up to a second per technology polled, so poll FeliCa only.
    settings: dict[str, Any] = {"type": "nfc", "id": READER, "device": f"udp:127.0.0.1:{port}",
                                "targets": ["212F"], "rescan_gap_s": 0.0, "reconnect_s": 0.2}
    settings.update(overrides)
    return NfcReaderConfig(**settings)


def read_while_tag_presented(emulator_args: list[str], **overrides: Any) -> list[Scan]:
    """Run the real input while the emulator presents its tag; return the scans once it is done.

    Scans are emitted while a tag is on the reader, so once the emulator has exited (tag gone for
    good) the list is final: no waiting for something not to happen.
    """
    port = free_udp_port()
    scans: list[Scan] = []

    async def scenario() -> tuple[int, str]:
        emulator = await asyncio.create_subprocess_exec(
            sys.executable, str(EMULATOR), "--port", str(port), *emulator_args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert emulator.stdout is not None
        task, first = None, b""
        try:
            # Start reading once the tag listens: the reader's first poll then finds it rather
            # than waiting out udp's one-second answer timeout. (Order does not matter otherwise.)
            first = await asyncio.wait_for(emulator.stdout.readline(), DEADLINE_S)
            task = asyncio.create_task(create(reader_config(port, **overrides)).run(scans.append))
            out, err = await asyncio.wait_for(emulator.communicate(), DEADLINE_S)
        except TimeoutError:
            emulator.kill()
            out, err = await emulator.communicate()
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return emulator.returncode or 0, (first + out + err).decode(errors="replace")

    returncode, transcript = asyncio.run(scenario())
    assert returncode == 0 and transcript.rstrip().endswith("done"), transcript
    return scans


# --- through the udp driver --------------------------------------------------------------------


def test_felica_tag_with_ndef_uri_is_one_phone_scan_per_presentation(logs: list[MutableMapping[str, Any]]) -> None:
    # Held on the reader through several presence checks each time, presented twice.
    scans = read_while_tag_presented(["--uid", "03FEFFE011223344", "--uri", DIGITAL_ID_URL,
                                      "--presentations", "2", "--min-polls", "3", "--gap", "0.3"])

    assert [(s.reader_id, s.source, s.raw, s.hint) for s in scans] == [
        (READER, Source.PHONE_NFC, DIGITAL_ID_URL.encode(), None),
    ] * 2
    assert all(s.at_monotonic > 0 for s in scans)
    # The token is a credential: it must not reach any log line.
    assert "4f1c2a9e7b" not in repr(logs)


def test_felica_tag_with_ndef_text_carries_the_credential_jwt() -> None:
    scans = read_while_tag_presented(["--uid", "03FEFFE011223344", "--text", CREDENTIAL_JWT])

    assert [(s.source, s.raw, s.hint) for s in scans] == [(Source.PHONE_NFC, CREDENTIAL_JWT.encode(), None)]


def test_felica_card_without_ndef_is_a_card_scan_of_its_idm(logs: list[MutableMapping[str, Any]]) -> None:
    # System code 0003 (a transit-style FeliCa card): no NFC Forum NDEF area at all.
    scans = read_while_tag_presented(["--uid", "01A2B3C4D5E6F708", "--sys", "0003"])

    assert [(s.reader_id, s.source, s.raw, s.hint) for s in scans] == [(READER, Source.CARD, b"01A2B3C4D5E6F708", "card")]
    assert "01A2B3C4D5E6F708" not in repr(logs).upper()  # not logged: the decision line carries its keyed fingerprint
    assert any(e["event"] == "nfc_scan" and e.get("uid_bytes") == 8 and "card" not in e for e in logs)


def test_tag_with_junk_instead_of_ndef_is_counted_by_its_uid(logs: list[MutableMapping[str, Any]]) -> None:
    # A text record header claiming 16 payload bytes that are not there.
    scans = read_while_tag_presented(["--uid", "03FEFFE011223344", "--ndef-hex", "d1011054"])

    assert [(s.source, s.raw, s.hint) for s in scans] == [(Source.CARD, b"03FEFFE011223344", "card")]
    assert any(e["event"] == "nfc_ndef_invalid" for e in logs)
    assert not any(e["event"] in ("nfc_frontend_lost", "nfc_reader_error") for e in logs)


def test_iso14443a_card_is_a_card_scan_of_its_seven_byte_uid() -> None:
    # A double-size UID goes through two anticollision cascade levels; the UID comes out whole.
    # Four page-0 reads answered: nfcpy's capability-container read, then presence checks.
    scans = read_while_tag_presented(["--tech", "106A", "--uid", "05A1B2C3D4E5F6", "--presentations", "2",
                                      "--min-polls", "4", "--gap", "0.3"], targets=["106A"])

    assert [(s.source, s.raw, s.hint) for s in scans] == [(Source.CARD, b"05A1B2C3D4E5F6", "card")] * 2


def test_read_ndef_off_counts_an_ndef_tag_by_its_uid() -> None:
    scans = read_while_tag_presented(["--uid", "03FEFFE011223344", "--uri", "https://example.com/about"],
                                     read_ndef=False)

    assert [(s.source, s.raw, s.hint) for s in scans] == [(Source.CARD, b"03FEFFE011223344", "card")]


# --- frontend missing ---------------------------------------------------------------------------


def test_missing_frontend_warns_what_to_check_and_retries_without_crashing(logs: list[MutableMapping[str, Any]]) -> None:
    cfg = NfcReaderConfig(type="nfc", id=READER, device="tty:DOORBRIDGE_NO_SUCH_PORT:pn532", reconnect_s=0.05)
    scans: list[Scan] = []

    def attempts() -> int:
        return sum(1 for e in logs if e["event"] == "nfc_frontend_unavailable")

    async def scenario() -> bool:
        task = asyncio.create_task(create(cfg).run(scans.append))
        deadline = time.monotonic() + DEADLINE_S
        while attempts() < 3 and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.02)
        crashed = task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return crashed

    crashed = asyncio.run(scenario())

    assert not crashed
    assert attempts() >= 3
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["nfc_frontend_unavailable"]  # once, retries are debug
    warning = warnings[0]
    assert warning["reader"] == READER and warning["device"] == cfg.device
    assert "plugdev" in warning["check"] and "door-bridge doctor" in warning["check"]
    assert scans == []


class ScriptedFrontends:
    """Stands in for `nfc.ContactlessFrontend` where the udp driver has no equivalent: a reader
    that is absent at first, or one that vanishes while open (udp always opens and never fails).
    Mocked on purpose, for these failure paths only."""

    def __init__(self, open_failures: int, connect: Callable[[dict[str, Any]], Any]) -> None:
        self.open_failures = open_failures
        self.on_connect = connect
        self.opens = self.connects = self.closes = 0

    def __call__(self, path: str) -> ScriptedFrontends:
        self.opens += 1
        if self.opens <= self.open_failures:
            raise OSError(errno.ENODEV, "No such device")
        return self

    device = "scripted frontend"

    def connect(self, **options: Any) -> Any:
        self.connects += 1
        return self.on_connect(options)

    def close(self) -> None:
        self.closes += 1


def run_until(frontends: ScriptedFrontends, monkeypatch: pytest.MonkeyPatch, done: Callable[[], bool]) -> None:
    monkeypatch.setattr(nfc, "ContactlessFrontend", frontends)
    cfg = NfcReaderConfig(type="nfc", id=READER, device="usb:054c:06c3", reconnect_s=0.02, poll_interval_s=0.02)

    async def scenario() -> None:
        task = asyncio.create_task(create(cfg).run(lambda scan: None))
        deadline = time.monotonic() + DEADLINE_S
        while not done() and time.monotonic() < deadline:
            assert not task.done(), "the input ended by itself"
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert done()


def test_frontend_that_appears_later_is_used_after_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                              logs: list[MutableMapping[str, Any]]) -> None:
    def wait_for_taps(options: dict[str, Any]) -> None:
        while not options["terminate"]():
            pass  # `terminate` itself waits poll_interval_s

    frontends = ScriptedFrontends(open_failures=2, connect=wait_for_taps)
    run_until(frontends, monkeypatch, lambda: frontends.connects >= 1)

    notable = [(e["event"], e["log_level"]) for e in logs if e["log_level"] != "debug"]
    assert notable == [("nfc_frontend_unavailable", "warning"), ("nfc_frontend_ready", "info")]
    assert next(e for e in logs if e["event"] == "nfc_frontend_ready")["after_attempts"] == 2
    assert frontends.closes == 1  # closed when cancelled


def test_frontend_that_vanishes_is_reopened_and_warned_about_once(monkeypatch: pytest.MonkeyPatch,
                                                                  logs: list[MutableMapping[str, Any]]) -> None:
    # `connect` returning False is how nfcpy reports the device raising IOError (unplugged).
    frontends = ScriptedFrontends(open_failures=0, connect=lambda options: False)
    run_until(frontends, monkeypatch, lambda: frontends.opens >= 4)

    notable = [(e["event"], e["log_level"]) for e in logs if e["log_level"] != "debug"]
    assert notable[:2] == [("nfc_frontend_ready", "info"), ("nfc_frontend_lost", "warning")]
    assert notable.count(("nfc_frontend_lost", "warning")) == 1  # flapping: once, then debug lines
    assert frontends.closes == frontends.opens


def test_repeated_tag_errors_reopen_the_frontend(monkeypatch: pytest.MonkeyPatch,
                                                 logs: list[MutableMapping[str, Any]]) -> None:
    def trip(options: dict[str, Any]) -> None:
        raise nfc.clf.ProtocolError("SENS Response Format Error")

    frontends = ScriptedFrontends(open_failures=0, connect=trip)
    run_until(frontends, monkeypatch, lambda: frontends.opens >= 2)

    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings[:4] == ["nfc_tag_error"] * 3 + ["nfc_frontend_lost"]
    assert frontends.connects >= 3


class TagPulledMidRead:
    """What nfcpy hands `on-connect` when its NDEF read raises: the udp emulator cannot make nfcpy
    raise there, so this one stand-in plays the tag (identifier, type, ndef) nfcpy would pass."""

    type = "Type4Tag"
    identifier = bytearray.fromhex("08A1B2C3")

    def __init__(self, read_fails: bool) -> None:
        self.read_fails = read_fails

    @property
    def ndef(self) -> None:
        if self.read_fails:
            raise nfc.tag.TagCommandError(nfc.tag.TIMEOUT_ERROR)


def test_tap_pulled_away_mid_read_gives_no_scan_and_does_not_hold_back_the_retry(
        monkeypatch: pytest.MonkeyPatch, logs: list[MutableMapping[str, Any]]) -> None:
    taps = [TagPulledMidRead(read_fails=True), TagPulledMidRead(read_fails=False)]
    scans: list[Scan] = []

    def present_next_tap(options: dict[str, Any]) -> bool | None:
        if not taps:
            while not options["terminate"]():
                pass
            return None
        tag = taps.pop(0)
        options["rdwr"]["on-connect"](tag)
        return bool(options["rdwr"]["on-release"](tag))

    frontends = ScriptedFrontends(open_failures=0, connect=present_next_tap)
    monkeypatch.setattr(nfc, "ContactlessFrontend", frontends)
    cfg = NfcReaderConfig(type="nfc", id=READER, device="usb", rescan_gap_s=60.0, poll_interval_s=0.02)

    async def scenario() -> None:
        task = asyncio.create_task(create(cfg).run(scans.append))
        deadline = time.monotonic() + DEADLINE_S
        while frontends.connects < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())

    assert [(s.source, s.raw) for s in scans] == [(Source.CARD, b"08A1B2C3")]  # the retry counted
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["nfc_read_incomplete"]


def test_cancelling_run_stops_the_reader_thread() -> None:
    port = free_udp_port()  # nobody answers there: the thread is busy polling when cancelled

    async def scenario() -> None:
        task = asyncio.create_task(create(reader_config(port)).run(lambda scan: None))
        deadline = time.monotonic() + DEADLINE_S
        while not _reader_threads() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert _reader_threads()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())

    assert _reader_threads() == []


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"nfc-{READER}" and t.is_alive()]


# --- pieces ------------------------------------------------------------------------------------


def test_trouble_warns_at_the_start_of_an_episode_then_reminds() -> None:
    trouble = TroubleLog(remind_every_s=300.0, stable_after_s=60.0)
    assert trouble.problem(0.0)
    assert not trouble.problem(2.0)
    assert trouble.ready(3.0)  # back after a warning: news
    assert not trouble.problem(5.0)  # flapping: same episode
    assert not trouble.ready(6.0)
    assert trouble.problem(301.0)  # reminder
    assert trouble.ready(302.0)
    assert trouble.problem(400.0)  # open for more than a minute: a new episode


def test_same_card_counts_again_only_after_being_away_long_enough() -> None:
    gate = SameCardGate(gap_s=1.0)
    card, other = b"\x01\x02", b"\x03\x04"

    assert gate.is_new(card, now=10.0)
    gate.released(card, now=10.0)
    assert not gate.is_new(card, now=10.5)  # a flaky presence check, not a new tap
    assert gate.is_new(other, now=10.5)
    assert gate.is_new(card, now=11.0)


def test_zero_rescan_gap_counts_every_presentation() -> None:
    gate = SameCardGate(gap_s=0.0)
    gate.released(b"\x01", now=5.0)
    assert gate.is_new(b"\x01", now=5.0)


def test_credential_text_takes_the_first_text_or_uri_record() -> None:
    mime = ndef.Record("text/vcard", "1", b"BEGIN:VCARD")
    assert credential_text([mime, ndef.UriRecord(DIGITAL_ID_URL), ndef.TextRecord("second")]) == DIGITAL_ID_URL
    assert credential_text([ndef.TextRecord("vis_7Hq2"), ndef.UriRecord(DIGITAL_ID_URL)]) == "vis_7Hq2"
    assert credential_text([mime]) is None
    assert credential_text([]) is None


def test_config_defaults_and_device_paths() -> None:
    cfg = NfcReaderConfig(type="nfc", id="R1", device="usb:054c:06c3")
    assert (cfg.door, cfg.reconnect_s, cfg.targets, cfg.read_ndef) == ("main", 2.0, ["106A", "106B", "212F"], True)
    for good in ("usb", "tty:AMA0:pn532", "udp:127.0.0.1:54321"):
        NfcReaderConfig(type="nfc", id="R1", device=good)


@pytest.mark.parametrize("device", ["/dev/ttyUSB0", "usb:", "pn532", ""])
def test_config_says_what_a_device_path_looks_like(device: str) -> None:
    with pytest.raises(ValidationError, match="not an nfcpy device path: use usb"):
        NfcReaderConfig(type="nfc", id="R1", device=device)


@pytest.mark.parametrize("bad", [
    {"device": "usb", "targets": []},
    {"device": "usb", "targets": ["106X"]},
    {"device": "usb", "reconnect_s": 0},
    {"device": "usb", "rescan_gap_s": -1.0},
    {"device": "usb", "poll_intervl_s": 0.1},
])
def test_config_rejects_mistakes(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NfcReaderConfig(type="nfc", id="R1", **bad)
