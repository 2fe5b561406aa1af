"""The door's own GPIO LED winks between decisions whenever the door decides offline: upstream
unreachable *or* a stale cache (DoorMonitor.set_offline's contract). Before, the daemon told the GPIO
LED only about the upstream, so a door started on a stale cache, or whose cache went stale while it
ran, showed a dark LED as if all were well; the OSDP readers already winked for both."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from bridge.inputs.base import Scan
from verifier.types import Source
from tests.support.harness import T0, Site, door_records, make_config, running, wait_for

LED_PIN = 22


def _blinks(pin) -> int:  # MockPin.states: every level the pin was driven to, in order
    return sum(1 for s in pin.states if s.state)


def _config(tmp_path: Path):
    site = Site()
    state = tmp_path / "state"
    state.mkdir()
    site.install(state, door_records("SCAN-1"))  # valid for 7 days from T0
    return make_config(state, site, [], doors={"main": {"relay_pin": 17, "pulse_s": 0.3, "led_pin": LED_PIN}})


async def test_the_door_led_winks_for_a_cache_that_is_stale_at_start(tmp_path: Path) -> None:
    async with running(_config(tmp_path), clock=lambda: T0 + timedelta(days=8)) as (daemon, factory):
        led = factory.pin(LED_PIN)
        await wait_for(lambda: _blinks(led) >= 2, 20, "the offline wink on the door LED")
        assert daemon.parts.door_monitors["main"].feedback_out is not None


async def test_the_door_led_stays_dark_on_a_fresh_cache_and_winks_once_it_goes_stale(tmp_path: Path) -> None:
    now = [T0 + timedelta(days=1)]
    async with running(_config(tmp_path), clock=lambda: now[0]) as (daemon, factory):
        led = factory.pin(LED_PIN)
        await asyncio.sleep(1.0)
        assert _blinks(led) == 0  # fresh and no upstream configured: nothing to wink about
        now[0] = T0 + timedelta(days=8)
        await daemon.pipeline.handle(Scan("SCAN-1", Source.CARD, b"6B06C2A25E99C68EDCBE"))  # a decision notices the cache went stale
        await wait_for(lambda: _blinks(led) >= 3, 20, "the offline wink after the deny pattern")
