"""The OSDP reader's inputs and feedback beyond the basic card/PIN case, against libosdp's own
PeripheralDevice in a second process over a real pty (tests/support/osdp_pd_emulator.py): card
numbers from a CSN reader, the PIN entry timeout, one scan per presentation, the lockout and
offline/stale feedback, PD power reports; and the SCBK read like every secret (mode-checked
file, systemd credential).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config.readers import OsdpReaderConfig
from bridge.door.feedback import DENY_LED, OFFLINE_IDLE_LED, RATE_LIMITED_BEEP
from bridge.inputs.osdp_logic import buzzer_pattern, led_pattern
from bridge.inputs.osdp_reader import OsdpKeyError, load_scbk
from tests.support.harness import T0, relay_pulses, running, wait_for
from tests.support.osdp_rig import bus  # noqa: F401  (the pty fixture: the daemon's end by path, the emulator's by fd)
from tests.support.osdp_rig import (
    CARD,
    KEY,
    READER,
    config,
    daemon_on,
    emulated,
    events,
    key_file,
    online,
)

LED, BUZZER = 2, 3  # osdp.Command values, as the emulator reports them
RED, AMBER, NONE = 1, 3, 0


def verify_rows(daemon: Any) -> list[dict[str, Any]]:
    return [e.body for e in daemon.parts.outbox.recent(200) if e.type == "VERIFY"]


async def test_a_locked_out_keypad_gets_red_blinks_and_one_long_beep(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            for n in range(cfg.policy.rate_limit_denies + 1):
                pd.send(pd=101, keys=f"135{n}#")  # nobody's PINs (each a new guess, not a replay)
                await wait_for(lambda: daemon.health.stats.decisions >= n + 1, 30, "PIN decision")
            await daemon.quiesce()
            reasons = [r["reason"] for r in verify_rows(daemon)]
            assert reasons[-1] == "RATE_LIMITED" and "RATE_LIMITED" not in reasons[:-1]
            await wait_for(lambda: len(pd.commands(101, BUZZER)) >= len(reasons), 30, "a buzzer command per decision")
            beeps = [(c["on_count"], c["off_count"], c["rep_count"]) for c in pd.commands(101, BUZZER)]
            long_beep, deny_beeps = buzzer_pattern(RATE_LIMITED_BEEP), beeps[0]
            assert beeps[-1] == (long_beep.on, long_beep.off, long_beep.repeat) != deny_beeps
            red = led_pattern(DENY_LED, RED, NONE)
            last_led = [c for c in pd.commands(101, LED) if c["temporary"]][-1]
            assert (last_led["on_color"], last_led["on_count"], last_led["off_count"]) == (RED, red.on, red.off)


async def test_a_stale_cache_makes_the_reader_wink_amber_between_decisions(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    after_the_bundle = T0 + timedelta(days=8)  # the test bundle is valid for 7 days from T0
    with emulated(master, f"101:{KEY}") as pd:
        async with running(cfg, clock=lambda: after_the_bundle) as (daemon, _factory):
            await wait_for(lambda: online(daemon), 30, "online")
            wink = led_pattern(OFFLINE_IDLE_LED, AMBER, NONE, permanent=True)
            await wait_for(lambda: any(not c["temporary"] and c["on_color"] == AMBER for c in pd.commands(101, LED)),
                           30, "a permanent amber LED pattern")
            idle = [c for c in pd.commands(101, LED) if not c["temporary"]][-1]
            assert (idle["on_count"], idle["off_count"], idle["off_color"]) == (wink.on, wink.off, NONE)


async def test_pd_power_failure_and_its_end_are_audit_events(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            pd.send(pd=101, status=[0, 1])
            await wait_for(lambda: events(daemon, "READER_POWER"), 30, "power failure event")
            pd.send(pd=101, status=[0, 0])
            await wait_for(lambda: len(events(daemon, "READER_POWER")) == 2, 30, "power restored event")
            assert [(e["powerFailure"], e["where"], e["readerId"]) for e in events(daemon, "READER_POWER")] == [
                (True, "local", READER), (False, "local", READER)]
            assert events(daemon, "READER_TAMPER") == []  # tamper bit 0 all along


async def test_a_card_held_on_the_reader_is_one_presentation(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY)), "rescan_gap_s": 2.0}])
    # No replay answer for the second presentation: it is decided (and pulses) again.
    cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"replay_window_s": 0.0})})
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            for _ in range(3):  # a reader repeating the card while it is held
                pd.card(101, CARD)
                await asyncio.sleep(0.3)
            await wait_for(lambda: daemon.health.stats.decisions >= 1, 30, "decision")
            await asyncio.sleep(1.0)
            assert daemon.health.stats.decisions == 1
            await asyncio.sleep(2.5)  # taken away and presented again
            pd.card(101, CARD)
            await wait_for(lambda: daemon.health.stats.decisions >= 2, 30, "the second presentation")
            relay = daemon.factory.pin(17)
            await wait_for(lambda: len(relay_pulses(relay)) == 2 and not relay.state, 30, "two relay pulses")


async def test_a_csn_readers_bits_are_the_card_number_in_hex(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY)), "card_bits": "hex"}])
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            pd.send(pd=101, card="04a22c1a7b3f80", bits=56)  # the card on record as 04A22C1A7B3F80
            await wait_for(lambda: daemon.health.stats.decisions >= 1, 30, "decision")
            await daemon.quiesce()
            assert [(r["source"], r["decision"], r["reason"]) for r in verify_rows(daemon)] == [("CARD", "GRANT", None)]


async def test_a_pin_entry_left_unfinished_is_forgotten_after_pin_timeout_s(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY)), "pin_timeout_s": 1.0}])
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            pd.send(pd=101, keys="13")  # walked away
            await asyncio.sleep(2.0)
            pd.send(pd=101, keys="2468#")  # without the timeout this is 132468: nobody's
            await wait_for(lambda: daemon.health.stats.decisions >= 1, 30, "decision")
            await daemon.quiesce()
            assert [(r["source"], r["decision"]) for r in verify_rows(daemon)] == [("KEYPAD", "GRANT")]


def osdp_cfg(**key: Any) -> OsdpReaderConfig:
    return OsdpReaderConfig(type="osdp", id=READER, port="/dev/ttyUSB0", address=1, **key)


def test_an_scbk_file_others_can_read_is_refused_naming_the_file_never_the_key(tmp_path: Path) -> None:
    path = key_file(tmp_path, "pd.key", KEY)
    path.chmod(0o644)
    with pytest.raises(OsdpKeyError) as refused:
        load_scbk(osdp_cfg(scbk_file=str(path)))
    assert str(path) in str(refused.value)
    assert KEY.lower() not in str(refused.value).lower() and "API key" not in str(refused.value)
    path.chmod(0o600)
    assert load_scbk(osdp_cfg(scbk_file=str(path))) == bytes.fromhex(KEY)


def test_an_scbk_from_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pd-1.scbk").write_text(KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load_scbk(osdp_cfg(scbk_credential="pd-1.scbk")) == bytes.fromhex(KEY)
    (credentials / "pd-2.scbk").write_text("notakey\n")
    with pytest.raises(OsdpKeyError, match="32 hex digits") as bad:
        load_scbk(osdp_cfg(scbk_credential="pd-2.scbk"))
    assert "notakey" not in str(bad.value)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(OsdpKeyError, match="CREDENTIALS_DIRECTORY") as unset:
        load_scbk(osdp_cfg(scbk_credential="pd-1.scbk"))
    assert "scbk_credential" in str(unset.value) and "api_key" not in str(unset.value)

