"""Card-read-to-relay latency over OSDP: libosdp's PeripheralDevice (second process, pty) → the
daemon's Control Panel at 115200 baud, Secure Channel on → decision → relay (MockFactory).

Prints p50/p99/max of the whole path (PD submits the card read → relay pulsed), of the part inside
the daemon (libosdp hands the event over → relay pulsed) and the bus's share (the rest: waiting
for the next osdp_POLL, the frames on the wire, libosdp's refresh period); the reads that never
became a decision; the sessions lost (READER_OFFLINE).

`--late-every N` stops the PD's process for `--late-ms` right after every Nth card read, so one
reply comes late, as from a PD on a noisy line or a test machine starved of CPU: the shape of the
rare multi-second outlier of the plain run (docs/osdp.md, "One late reply"). The emulated PD
repeats its last reply when the CP repeats a command, as OSDP asks; `--pd-no-repeat` shows
libosdp's PD as it is (the session and sometimes the card read are lost).

    .venv/bin/python bench/osdp_latency.py [--reads 100] [--late-every 10 --late-ms 300] [--pd-no-repeat]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.harness import wait_for  # noqa: E402
from tests.support.osdp_rig import (  # noqa: E402
    CARD,
    KEY,
    READER,
    Pd,
    config,
    daemon_on,
    emulated,
    events,
    key_file,
    online,
)

# A card read with no decision after this long is counted lost (the PD dropped it).
LOST_AFTER_S = 10.0


@dataclass(frozen=True, slots=True)
class Read:
    total_ms: float  # PD submits → relay
    inside_ms: float  # libosdp's event → relay (the decision's own latency)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(reads: int, late_every: int, late_ms: float, repeat: bool) -> None:
    master, slave = os.openpty()
    import tty

    tty.setraw(master)
    port = os.ttyname(slave)
    os.close(slave)
    tmp = Path(tempfile.mkdtemp(prefix="bench-osdp-"))
    cfg = config(tmp, port, [{"scbk_file": str(key_file(tmp, "pd.key", KEY)), "rescan_gap_s": 0.0}])
    cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"replay_window_s": 0.0})})
    relayed: list[tuple[float, float]] = []
    done: list[Read] = []
    lost = 0
    with emulated(master, f"101:{KEY}" + ("" if repeat else ":no-repeat")) as pd:
        async with daemon_on(cfg) as daemon:
            daemon.decision_listeners.append(lambda d, ms, *rest: relayed.append((time.monotonic(), ms)))
            await wait_for(lambda: online(daemon), 30, "online")
            bus = daemon.parts.reader_feedback[READER].bus
            for i in range(reads):
                before, sent_before = len(relayed), _sent(pd)
                pd.card(101, CARD)
                await wait_for(lambda: _sent(pd) > sent_before, 10, "the PD took the card read")
                if late_every and i % late_every == late_every - 1:
                    await asyncio.sleep(0.02)
                    os.kill(pd.proc.pid, signal.SIGSTOP)
                    await asyncio.sleep(late_ms / 1000)
                    os.kill(pd.proc.pid, signal.SIGCONT)
                try:
                    await wait_for(lambda: len(relayed) > before, LOST_AFTER_S, "decision")
                except AssertionError:
                    lost += 1
                    await wait_for(lambda: online(daemon), 30, "online again")
                    continue
                sent_at = [line["at"] for line in pd.lines if line.get("sent") == "card"][-1]
                at, inside = relayed[before]
                done.append(Read((at - sent_at) * 1000, inside))
                await asyncio.sleep(0.25 + (i % 7) * 0.013)  # spread reads over the poll cycle
            rx, tx = bus.channel.rx_bytes, bus.channel.tx_bytes
            sessions_lost = len(events(daemon, "READER_OFFLINE"))
    os.close(master)
    total = [r.total_ms for r in done]
    inside = [r.inside_ms for r in done]
    on_bus = [r.total_ms - r.inside_ms for r in done]
    late = f", PD {late_ms:.0f} ms late after every {late_every}th read" if late_every else ""
    late += "" if repeat else ", libosdp's PD as it is (no repeat of its last reply)"
    print(f"OSDP card read → relay, {reads} reads{late}, 115200 baud, Secure Channel, libosdp refresh 20 ms, "
          "poll every 50 ms")
    for name, values in (("total", total), ("in daemon", inside), ("bus share", on_bus)):
        print(f"  {name:<10} p50 {pct(values, .5):7.1f} ms   p99 {pct(values, .99):7.1f} ms   max {max(values):7.1f} ms")
    print(f"  bus share of the mean: {statistics.mean(on_bus) / statistics.mean(total):.0%}")
    print(f"  reads lost (no decision within {LOST_AFTER_S:.0f} s): {lost};  sessions lost (READER_OFFLINE): {sessions_lost}")
    print(f"  bytes on the line: {rx} from PD, {tx} to PD ({(rx + tx) * 10 / 115200:.2f} s of wire time in the whole run)")


def _sent(pd: Pd) -> int:
    return sum(1 for line in pd.lines if line.get("sent") == "card")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--late-every", type=int, default=0, help="stop the PD after every Nth read (0: never)")
    parser.add_argument("--late-ms", type=float, default=300.0, help="for this long (libosdp waits 200 ms for a reply)")
    parser.add_argument("--pd-no-repeat", action="store_true",
                        help="libosdp's PD as it is: a repeated command is processed again (tests/support/osdp_pd_emulator.py)")
    args = parser.parse_args()
    asyncio.run(measure(args.reads, args.late_every, args.late_ms, not args.pd_no_repeat))


if __name__ == "__main__":
    main()
