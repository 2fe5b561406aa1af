"""OSDP sessions and late replies, against libosdp's own PeripheralDevice in a second process over
a real pty (tests/support/osdp_pd_emulator.py).

A late reply is made by stopping the PD's process (SIGSTOP) for longer than libosdp's 200 ms
reply timeout: libosdp's CP sends the command again after 800 ms. A PD that follows OSDP repeats
its last reply (the emulator does that for libosdp's PD); libosdp's PD alone (`:no-repeat`)
processes the command again, fails the Secure Channel MAC check, NAKs and drops the session.
That was the multi-second outlier of bench/osdp_latency.py. Every wait has a deadline; nothing
asserts how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from tests.support.harness import wait_for
from tests.support.osdp_rig import bus  # noqa: F401  (the pty fixture: the daemon's end by path, the emulator's by fd)
from tests.support.osdp_rig import (
    CARD,
    KEY,
    Pd,
    config,
    daemon_on,
    emulated,
    events,
    key_file,
    online,
    reader_bus,
)

LATE_TRIES = 5
# The back-off a PD that keeps failing gets (the largest retry_s allowed): the reader must be back
# well before it, i.e. the first attempt after a lost session is not paced by it.
LONG_RETRY_S = 30.0
BACK_WITHIN_S = 20.0


async def late_reply(pd: Pd) -> None:
    os.kill(pd.proc.pid, signal.SIGSTOP)
    await asyncio.sleep(0.4)
    os.kill(pd.proc.pid, signal.SIGCONT)


async def late_until(pd: Pd, happened: Callable[[], bool], what: str) -> None:
    """Late replies until `happened`: on a loaded machine a stop can fall where the CP had
    nothing waiting, so one is not always enough."""
    for _ in range(LATE_TRIES):
        await late_reply(pd)
        with contextlib.suppress(AssertionError):
            await wait_for(happened, 5, what)
            return
    raise AssertionError(f"{LATE_TRIES} late replies and still not {what}")


async def test_a_lost_session_is_brought_back_at_once_not_after_the_retry_back_off(
        tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY)), "retry_s": LONG_RETRY_S}])
    with emulated(master, f"101:{KEY}:no-repeat") as pd, capture_logs() as logs:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            await late_until(pd, lambda: bool(events(daemon, "READER_OFFLINE")), "the session lost (READER_OFFLINE)")
            await wait_for(lambda: events(daemon, "READER_ONLINE"), BACK_WITHIN_S,
                           f"back online before the {LONG_RETRY_S:.0f} s back-off")
            pd.card(101, CARD)
            await wait_for(lambda: daemon.health.stats.decisions >= 1, 30, "a decision after the return")
    # A session that had been up with this key is never blamed on the key.
    assert not [e for e in logs if e["event"] == "osdp_offline" and e["problem"] == "wrong_key"]


async def test_a_late_reply_from_a_pd_that_repeats_it_costs_neither_the_session_nor_the_card_read(
        tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            pd.card(101, CARD)
            await wait_for(lambda: any(line.get("sent") == "card" for line in pd.lines), 30, "the PD took the card")
            # The reply carrying the card read, or a poll before it, is late; the CP repeats it.
            await late_until(pd, lambda: any(line.get("repeated") for line in pd.lines), "a command repeated")
            await wait_for(lambda: daemon.health.stats.decisions >= 1, 30, "the card read decided")
            assert events(daemon, "READER_OFFLINE") == [] and online(daemon)


async def test_libosdp_keeps_no_copy_of_the_events_it_handed_over(tmp_path: Path, bus: tuple[int, str]) -> None:
    master, port = bus
    cfg = config(tmp_path, port, [{"scbk_file": str(key_file(tmp_path, "pd101.key", KEY))}])
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            await wait_for(lambda: online(daemon), 30, "online")
            for n in range(3):
                pd.card(101, CARD)
                await wait_for(lambda: daemon.health.stats.decisions >= n + 1, 30, "decision")
                await asyncio.sleep(1.1)  # past rescan_gap_s: a new presentation
            await wait_for(lambda: len(pd.commands(101, 3)) >= 3, 30, "the buzzer commands (events too)")
            # ControlPanel.get_event() reads libosdp's own queue of every event: empty means it
            # does not grow for the life of the daemon.
            assert reader_bus(daemon).cp.get_event(101, timeout=-1) is None

