"""The OSDP reader against libosdp's own PeripheralDevice in a second process, over a real pty.

`tests/support/osdp_pd_emulator.py` runs the PDs on the master side of a pseudo-terminal pair; the daemon
opens the slave by path with pyserial, exactly as it opens a USB-RS485 adapter. The whole libosdp
stack runs on both ends (Secure Channel handshake, AES session, KEYSET, polling, retries). GPIO is
gpiozero's MockFactory. Every wait has a deadline; nothing asserts how fast.
"""

from __future__ import annotations

import asyncio
import os
import random
import stat
import time
from pathlib import Path

from structlog.testing import capture_logs

from bridge.inputs.osdp_logic import ReplyWatch, diagnose, led_pattern, units
from tests.support.harness import (
    relay_pulses,
    wait_for,
)
from tests.support.osdp_rig import bus  # noqa: F401  (the pty fixture: the daemon's end by path, the emulator's by fd)
from tests.support.osdp_rig import (
    CARD,
    DEADLINE_S,
    KEY,
    OTHER_KEY,
    READER,
    config,
    daemon_on,
    emulated,
    events,
    key_file,
    online,
    reader_bus,
)
from verifier.wiegand_formats import encode

# --- sessions -----------------------------------------------------------------------------------


async def test_card_read_and_pin_become_decisions_relay_pulses_and_feedback(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    with emulated(master, f"101:{KEY}") as pd, capture_logs() as logs:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), DEADLINE_S, "PD online with Secure Channel")
            await wait_for(lambda: any(line.get("pd") == 101 and line.get("secure") for line in pd.lines), DEADLINE_S,
                           "the PD's side of the session")
            pd.card(101, CARD)
            await wait_for(lambda: daemon.health.stats.decisions >= 1, DEADLINE_S, "card decision")
            pd.send(pd=101, keys="9*2468#")  # '*' clears the 9
            await wait_for(lambda: daemon.health.stats.decisions >= 2, DEADLINE_S, "PIN decision")
            pd.card(101, encode("H10301", 1, 7))  # nobody's card
            await wait_for(lambda: daemon.health.stats.decisions >= 3, DEADLINE_S, "deny decision")
            await daemon.quiesce()
            rows = [e.body for e in daemon.parts.outbox.recent(100) if e.type == "VERIFY"]
            assert [(r["readerId"], r["source"], r["decision"], r["reason"]) for r in rows] == [
                (READER, "CARD", "GRANT", None), (READER, "KEYPAD", "GRANT", None), (READER, "CARD", "DENY", "NO_GRANT")]
            relay = daemon.factory.pin(17)
            await wait_for(lambda: len(relay_pulses(relay)) == 2 and not relay.state, DEADLINE_S, "two relay pulses")
            # GRANT: green for the pulse and one beep; DENY: red blinks and two beeps.
            await wait_for(lambda: len(pd.commands(101, 3)) >= 3, DEADLINE_S, "three buzzer commands")
            leds = [c for c in pd.commands(101, 2) if c["temporary"]]
            assert [(c["on_color"], c["on_count"]) for c in leds[:3]] == [(2, 2), (2, 2), (1, 2)]
            assert [(c["on_count"], c["off_count"], c["rep_count"]) for c in pd.commands(101, 3)[:3]] == [
                (1, 0, 1), (1, 0, 1), (1, 1, 2)]
    assert "2468" not in repr(logs) and "4567" not in repr(logs)
    assert KEY.lower() not in repr(logs).lower()


async def test_wrong_key_is_refused_naming_the_reader_and_the_key_file(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    path = key_file(tmp_path, "pd101.key", KEY)
    cfg = config(tmp_path, port, [{"scbk_file": str(path)}])
    with emulated(master, f"101:{OTHER_KEY}") as pd, capture_logs() as logs:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: events(daemon, "READER_OFFLINE"), DEADLINE_S, "READER_OFFLINE")
            pd.card(101, CARD)
            await asyncio.sleep(1.0)
            assert not online(daemon) and daemon.health.stats.decisions == 0
            assert events(daemon, "READER_OFFLINE")[0]["problem"] == "wrong_key"
            state = daemon.health.snapshot()["readers"][READER]
            assert state["state"] == "failed" and str(path) in state["offline"]
            assert "offline" in daemon.health.status_line() and READER in daemon.health.status_line()
    errors = [e for e in logs if e["event"] == "osdp_offline"]
    assert errors and errors[0]["log_level"] == "error" and errors[0]["reader"] == READER
    assert errors[0]["problem"] == "wrong_key" and str(path) in errors[0]["detail"]
    assert KEY.lower() not in repr(logs).lower() and OTHER_KEY.lower() not in repr(logs).lower()


async def test_clear_text_pd_is_refused_when_secure_channel_is_enforced(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    with emulated(master, f"101:{KEY}:clear") as pd, capture_logs() as logs:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: events(daemon, "READER_OFFLINE"), DEADLINE_S, "READER_OFFLINE")
            pd.card(101, CARD)
            await asyncio.sleep(1.0)
            assert not online(daemon) and daemon.health.stats.decisions == 0
            assert events(daemon, "READER_OFFLINE")[0]["problem"] == "clear_text_only"
    refused = [e for e in logs if e["event"] == "osdp_offline"]
    assert refused[0]["problem"] == "clear_text_only" and "Secure Channel" in refused[0]["check"]


async def test_install_mode_hands_over_a_new_key_and_the_next_session_uses_it(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    path = key_file(tmp_path, "pd101.key", None)
    cfg = config(tmp_path, port, [{"scbk_file": str(path), "install": True}])
    with emulated(master, "101:none") as pd, capture_logs() as logs:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: path.exists(), DEADLINE_S, "the new key saved")
            await wait_for(lambda: online(daemon), DEADLINE_S, "online with the new key")
            await wait_for(lambda: events(daemon, "OSDP_KEY_INSTALLED"), DEADLINE_S, "OSDP_KEY_INSTALLED")
            assert events(daemon, "OSDP_KEY_INSTALLED") == [{"bridgeId": "BRIDGE-T", "readerId": READER, "door": "main",
                                                             "address": 101}]
        given = [c for c in pd.commands(101, 5)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not path.with_name("pd101.key.new").exists()
    new_key = path.read_text().strip()
    assert len(given) == 1 and given[0]["data"].upper() == new_key  # the PD got what the file holds
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert "osdp_install_mode" in warnings and any(e["event"] == "osdp_key_installed" for e in logs)
    assert new_key.lower() not in repr(logs).lower()
    # The PD restarts with the key it was given; install = true is still in the config, but the
    # key file now exists: Secure Channel is enforced with it, and no new key is handed over.
    with emulated(master, f"101:{new_key}") as pd, capture_logs() as logs:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), DEADLINE_S, "online with the installed key")
            pd.card(101, CARD)
            await wait_for(lambda: daemon.health.stats.decisions >= 1, DEADLINE_S, "decision")
        assert pd.commands(101, 5) == []
    assert any(e["event"] == "osdp_install_ignored" for e in logs)


async def test_killed_pd_is_reader_offline_and_its_return_reader_online(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    async with daemon_on(cfg) as daemon:
        with emulated(master, f"101:{KEY}") as pd:
            await wait_for(lambda: online(daemon), DEADLINE_S, "online")
            pd.kill()
            await wait_for(lambda: events(daemon, "READER_OFFLINE"), DEADLINE_S, "READER_OFFLINE")
            assert daemon.health.report()["state"] == "degraded"
            assert daemon.health.snapshot()["readers"][READER]["offline"].startswith("the PD stopped answering")
        with emulated(master, f"101:{KEY}") as pd:
            await wait_for(lambda: events(daemon, "READER_ONLINE"), DEADLINE_S, "READER_ONLINE")
            assert daemon.health.report()["state"] == "ok" and daemon.health.snapshot()["readers"][READER]["offline"] is None
            pd.card(101, CARD)
            await wait_for(lambda: daemon.health.stats.decisions >= 1, DEADLINE_S, "decision after the return")
        assert len(events(daemon, "READER_OFFLINE")) == 1


async def test_two_pds_on_one_bus_are_two_readers_and_tamper_is_an_audit_event(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))},
                                  {"id": "OSDP-2", "address": 102, "scbk_file": str(key_file(tmp_path, "pd102.key", OTHER_KEY))}])
    with emulated(master, f"101:{KEY}", f"102:{OTHER_KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon) and online(daemon, "OSDP-2"), DEADLINE_S, "both online")
            assert reader_bus(daemon) is reader_bus(daemon, "OSDP-2")
            pd.card(102, CARD)
            await wait_for(lambda: daemon.health.stats.decisions >= 1, DEADLINE_S, "decision")
            pd.send(pd=101, status=[1, 0])
            await wait_for(lambda: events(daemon, "READER_TAMPER"), DEADLINE_S, "tamper event")
            await daemon.quiesce()
            rows = [e.body for e in daemon.parts.outbox.recent(100) if e.type == "VERIFY"]
            assert [(r["readerId"], r["decision"]) for r in rows] == [("OSDP-2", "GRANT")]
            assert events(daemon, "READER_TAMPER")[0] == {"bridgeId": "BRIDGE-T", "readerId": READER, "door": "main",
                                                         "tamper": True, "where": "local"}


async def test_malformed_frames_on_the_line_never_crash_the_reader(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), DEADLINE_S, "online")
            noise = random.Random(1337)  # the same babble every run, so a failure can be replayed
            junk = [noise.randbytes(300), b"\x53\xe5\xff\xff\x00" + noise.randbytes(40), b"\x53\xe5\x08\x00\x04\x40",
                    b"\x53" * 64, bytes(range(256))]
            # Written onto the line as if another device babbled, until the reader has read some of
            # it: a session re-opened at that moment flushes the port's input, and with it the babble.
            deadline = time.monotonic() + DEADLINE_S
            while reader_bus(daemon).watch.noise_bytes == 0 and time.monotonic() < deadline:
                for chunk in junk:
                    os.write(master, chunk)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
            assert reader_bus(daemon).watch.noise_bytes > 0, "the reader never read the babble"
            await wait_for(lambda: online(daemon), DEADLINE_S, "still (or again) online")
            # Noise can cost the session a moment after it looked fine, and a card read sent into a
            # session being re-opened is lost (OSDP has no event replay): present it again, as a
            # holder would, until the reader decides. What must hold is that it does decide.
            deadline = time.monotonic() + DEADLINE_S
            while daemon.health.stats.decisions < 1 and time.monotonic() < deadline:
                if online(daemon):
                    pd.card(101, CARD)
                await asyncio.sleep(1.0)
            assert daemon.health.stats.decisions >= 1, "no decision after the noise"
            assert all(not t.done() for t in daemon._tasks if t.get_name().startswith("input-"))


# --- the pure parts -----------------------------------------------------------------------------


def test_reply_watch_tells_how_far_a_pd_got() -> None:
    watch = ReplyWatch()
    # PDID reply from address 5 (0x85), then junk, then a CCRYPT reply with a security block.
    watch.feed(b"\xff\x53\x85\x08\x00\x04\x45\x00\x00" + b"\x13\x37" + b"\x53\x85\x0b\x00\x0c\x03\x12\x00\x76\x00\x00")
    assert watch.seen(5).codes == {0x45, 0x76} and watch.noise_bytes >= 3
    assert diagnose(watch.seen(5), True, install_mode=False, key_source="/k").kind == "wrong_key"
    assert diagnose(watch.seen(6), None, install_mode=False, key_source="/k").kind == "no_answer"
    watch.feed(b"\x53\x86\x08\x00\x04\x46\x00\x00")
    assert diagnose(watch.seen(6), False, install_mode=False, key_source="/k").kind == "clear_text_only"


def test_feedback_patterns_are_the_gpio_ones_in_100_ms_units() -> None:
    from bridge.door.feedback import DENY_LED, OFFLINE_IDLE_LED

    assert units(0.15) == 2 and units(0.0) == 0 and units(0.01) == 1 and units(100) == 255
    deny = led_pattern(DENY_LED, 1, 0)
    assert (deny.on, deny.off, deny.timer) == (2, 2, 12)
    idle = led_pattern(OFFLINE_IDLE_LED, 3, 0, permanent=True)
    assert (idle.on, idle.off, idle.timer) == (1, 19, 0)
