"""Every input through the daemon: scan in → decision → relay pin history and audit row.

The only stand-ins are the ones with no real counterpart in CI: evdev devices (no /dev/uinput) are
`FakeKeyboard`s yielding real `evdev.InputEvent`s through the real decoders; GPIO is gpiozero's
MockFactory driven with real Wiegand pulse trains and real switch/button levels.
"""

from __future__ import annotations

import asyncio
import os

from structlog.testing import capture_logs

from bridge.inputs.evdev_scanner import EvdevScannerConfig, EvdevScannerInput
from bridge.inputs.keypad import KeypadConfig, KeypadInput
from tests.support.fakes.keyboard import FakeKeyboard, Plugging, Typist, us_table
from tests.support.harness import (
    SetClock,
    Site,
    make_config,
    relay_pulses,
    running,
    wait_for,
)
from tests.support.wiegand_wire import send
from verifier.hashing import PinHashing, hash_pin
from verifier.wiegand_formats import encode, encode_key

READERS = ["QR-1", "PAD-1", "WG-1"]


def records(pin_params: PinHashing):
    return [
        {"type": "zone", "id": "zone_a", "name": "Lobby", "readers": READERS},
        {"type": "user", "id": "u1", "name": "Layla Hassan"},
        {"type": "grant", "id": "g1", "userId": "u1", "zoneId": "zone_a"},
        {"type": "card", "number": "123:4567", "userId": "u1"},
        {"type": "card", "number": "99:1", "devices": READERS, "revoked": True},
        {"type": "visitor", "inviteCode": "vis_Lobby0123456789abcdefghij", "zoneIds": ["zone_a"]},
        {"type": "passcode", "id": "p1", "keyboardPwdHash": hash_pin("2468", pin_params), "devices": READERS},
    ]


def _setup(tmp_path, **door):
    site = Site()
    pin = PinHashing(os.urandom(16))
    site.install(tmp_path, records(pin), pin_hashing=pin)
    cfg = make_config(tmp_path, site, [], doors={"main": {"relay_pin": 17, "pulse_s": 0.2, **door}})
    return cfg


async def _verify_rows(daemon, n):
    await wait_for(lambda: daemon.health.stats.decisions >= n, what=f"{n} decisions")
    await daemon.quiesce()
    return [e.body for e in daemon.parts.outbox.recent(100) if e.type == "VERIFY"]


async def test_evdev_scanner_through_the_daemon(tmp_path):
    typist = Typist()
    table = us_table()
    events = typist.type("vis_Lobby0123456789abcdefghij", table) + typist.type("vis_nope0123456789abcdefghij", table)
    cfg = EvdevScannerConfig(type="evdev", id="QR-1", device="/dev/input/by-id/usb-scanner-event-kbd")
    keyboard = FakeKeyboard(events)
    scanner = EvdevScannerInput(cfg, open_device=Plugging(keyboard))
    async with running(_setup(tmp_path), clock=SetClock(), inputs=[scanner]) as (daemon, factory):
        rows = await _verify_rows(daemon, 2)
        assert keyboard.grabbed
        assert [(r["readerId"], r["decision"], r["reason"]) for r in rows] == [
            ("QR-1", "GRANT", None), ("QR-1", "DENY", "NO_GRANT")]
        await wait_for(lambda: len(relay_pulses(factory.pin(17))) == 1, what="one relay pulse")


async def test_evdev_keypad_pin_through_the_daemon(tmp_path):
    typist = Typist()
    taps = []
    for key in ("KEY_KP2", "KEY_KP4", "KEY_KP6", "KEY_KP8", "KEY_KPENTER", "KEY_KP1", "KEY_KP1", "KEY_KP1",
                "KEY_KP1", "KEY_KPENTER"):
        taps += typist.tap(key)
    pad = KeypadInput(KeypadConfig(type="keypad", id="PAD-1", device="keypad"), open_device=Plugging(FakeKeyboard(taps)))
    async with running(_setup(tmp_path), clock=SetClock(), inputs=[pad]) as (daemon, factory):
        rows = await _verify_rows(daemon, 2)
        assert [(r["source"], r["decision"], r["reason"], r["credentialKind"]) for r in rows] == [
            ("KEYPAD", "GRANT", None, "pin"), ("KEYPAD", "DENY", "NO_GRANT", "pin")]
        await wait_for(lambda: len(relay_pulses(factory.pin(17))) == 1, what="one relay pulse")


async def test_wiegand_card_and_keypad_bursts_through_the_daemon(tmp_path):
    cfg = _setup(tmp_path)
    cfg = cfg.model_copy(update={"readers": [make_config(tmp_path, Site(), [
        {"type": "wiegand", "id": "WG-1", "d0_pin": 20, "d1_pin": 21, "frame_gap_ms": 250, "keypad": True}]).readers[0]]})
    wg = cfg.readers[0]
    async with running(cfg, clock=SetClock()) as (daemon, factory):
        relay = factory.pin(17)
        await asyncio.to_thread(send, factory, wg, encode("H10301", 4567, 123))
        rows = await _verify_rows(daemon, 1)
        assert (rows[-1]["source"], rows[-1]["decision"], rows[-1]["userName"]) == ("CARD", "GRANT", "Layla Hassan")
        await asyncio.to_thread(send, factory, wg, encode("H10301", 1, 99))
        rows = await _verify_rows(daemon, 2)
        assert (rows[-1]["decision"], rows[-1]["reason"]) == ("DENY", "GRANT_REVOKED")
        bad = list(encode("H10301", 4567, 123))
        bad[0] ^= 1  # even parity broken: logged, never decided
        await asyncio.to_thread(send, factory, wg, tuple(bad), *[encode_key(k) for k in "2468#"])
        rows = await _verify_rows(daemon, 3)
        assert (rows[-1]["source"], rows[-1]["decision"]) == ("KEYPAD", "GRANT")
        assert daemon.health.stats.decisions == 3
        await wait_for(lambda: len(relay_pulses(relay)) == 2 and not relay.state, what="two relay pulses")


async def test_forced_and_held_open_each_give_one_audit_event_and_one_warning(tmp_path):
    # held_open_s is well above the 50 ms settle time: a door found open at start (MockPin's pull-up)
    # must read closed before its own held-open timer runs out, even on a loaded machine.
    cfg = _setup(tmp_path, door_switch_pin=22, rex_pin=23, held_open_s=1.5, forced_open_grace_s=0.2)
    with capture_logs() as logs:
        async with running(cfg, clock=SetClock()) as (daemon, factory):
            switch, rex = factory.pin(22), factory.pin(23)
            switch.drive_low()  # door closed
            await wait_for(lambda: daemon.parts.door_monitors["main"].state()["position"] == "closed", what="door closed")
            switch.drive_high()  # opened with no grant: forced
            await wait_for(lambda: daemon.parts.door_monitors["main"].state()["position"] == "open", what="door open")
            await wait_for(lambda: "DOOR_HELD_OPEN" in [e.type for e in daemon.parts.outbox.recent(50)], what="held-open event")
            switch.drive_low()
            await wait_for(lambda: daemon.parts.door_monitors["main"].state()["alarm"] is None, what="alarm cleared")
            rex.drive_low()
            rex.drive_high()
            await wait_for(lambda: len(relay_pulses(factory.pin(17))) == 1, what="REX pulse")
            await daemon.quiesce()
            types = [e.type for e in daemon.parts.outbox.recent(100)]
    assert types.count("DOOR_FORCED_OPEN") == 1 and types.count("DOOR_HELD_OPEN") == 1 and types.count("REX") == 1
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert warnings.count("door_forced_open") == 1 and warnings.count("door_held_open") == 1, warnings


async def test_nfc_tag_in_a_second_process_through_the_daemon(tmp_path):
    """nfcpy's udp driver: a FeliCa tag carrying an invite code as NDEF text, then a plain card UID."""
    import subprocess
    import sys

    from tests.support.nfc_tag_emulator import free_udp_port

    base = _setup(tmp_path)
    port = free_udp_port()
    nfc_reader = make_config(tmp_path, Site(), [{"type": "nfc", "id": "QR-1", "device": f"udp:127.0.0.1:{port}",
                                                 "targets": ["212F"], "rescan_gap_s": 0}]).readers[0]
    cfg = base.model_copy(update={"readers": [nfc_reader]})
    emulator = subprocess.Popen(
        [sys.executable, "tests/support/nfc_tag_emulator.py", "--port", str(port), "--uid", "03FEFFE011223344",
         "--text", "vis_Lobby0123456789abcdefghij", "--presentations", "1"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert emulator.stdout.readline().startswith("listening")
        async with running(cfg, clock=SetClock()) as (daemon, factory):
            rows = await _verify_rows(daemon, 1)
            assert (rows[0]["readerId"], rows[0]["source"], rows[0]["credentialKind"], rows[0]["decision"]) == (
                "QR-1", "VISITOR", "invite", "GRANT")  # a visitor's code is VISITOR whatever read it
            await wait_for(lambda: len(relay_pulses(factory.pin(17))) == 1, what="relay pulse")
    finally:
        emulator.kill()
        emulator.wait(10)

    plain = subprocess.Popen(
        [sys.executable, "tests/support/nfc_tag_emulator.py", "--port", str(port), "--uid", "03FEFFE011223344",
         "--sys", "0003", "--presentations", "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert plain.stdout.readline().startswith("listening")
        async with running(cfg, clock=SetClock()) as (daemon, factory):
            rows = await _verify_rows(daemon, 1)  # a fresh daemon: its first decision, the outbox's second row
            assert len(rows) == 2
            assert (rows[-1]["source"], rows[-1]["credentialKind"], rows[-1]["decision"], rows[-1]["reason"]) == (
                "CARD", "card", "DENY", "NO_GRANT")
    finally:
        plain.kill()
        plain.wait(10)
