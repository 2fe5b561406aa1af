"""Card-read-to-relay latency over OSDP: libosdp's PeripheralDevice (second process, pty) → the
daemon's Control Panel at 115200 baud, Secure Channel on → decision → relay (MockFactory).

Prints p50/p99 of the whole path (PD submits the card read → relay pulsed), of the part inside the
daemon (libosdp hands the event over → relay pulsed) and the bus's share (the rest: waiting for
the next osdp_POLL, the frames on the wire, libosdp's refresh period).

    .venv/bin/python bench/osdp_latency.py [--reads 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_osdp_reader import CARD, KEY, READER, config, daemon_on, emulated, key_file, online  # noqa: E402
from tests.support.harness import wait_for  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(reads: int) -> None:
    master, slave = os.openpty()
    import tty

    tty.setraw(master)
    port = os.ttyname(slave)
    os.close(slave)
    tmp = Path(tempfile.mkdtemp(prefix="bench-osdp-"))
    cfg = config(tmp, port, [{"scbk_file": str(key_file(tmp, "pd.key", KEY)), "rescan_gap_s": 0.0}])
    cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"replay_window_s": 0.0})})
    relayed: list[tuple[float, float]] = []
    with emulated(master, f"101:{KEY}") as pd:
        async with daemon_on(cfg) as daemon:
            daemon.decision_listeners.append(lambda d, ms, *rest: relayed.append((time.monotonic(), ms)))
            await wait_for(lambda: online(daemon), 30, "online")
            bus = daemon.reader_feedback[READER].bus
            for i in range(reads):
                pd.card(101, CARD)
                await wait_for(lambda: len(relayed) > i, 10, "decision")
                await asyncio.sleep(0.25 + (i % 7) * 0.013)  # spread reads over the poll cycle
            sent = [line["at"] for line in pd.lines if line.get("sent") == "card"]
            rx, tx = bus.channel.rx_bytes, bus.channel.tx_bytes
    os.close(master)
    total = [(r - s) * 1000 for (r, _), s in zip(relayed, sent)]
    inside = [ms for _, ms in relayed]
    on_bus = [t - d for t, d in zip(total, inside)]
    print(f"OSDP card read → relay, {reads} reads, 115200 baud, Secure Channel, libosdp refresh 20 ms, poll every 50 ms")
    print(f"  total      p50 {pct(total, .5):6.1f} ms   p99 {pct(total, .99):6.1f} ms")
    print(f"  in daemon  p50 {pct(inside, .5):6.1f} ms   p99 {pct(inside, .99):6.1f} ms")
    print(f"  bus share  p50 {pct(on_bus, .5):6.1f} ms   p99 {pct(on_bus, .99):6.1f} ms   "
          f"({statistics.mean(on_bus) / statistics.mean(total):.0%} of the mean)")
    print(f"  bytes on the line: {rx} from PD, {tx} to PD ({(rx + tx) * 10 / 115200:.2f} s of wire time in the whole run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=100)
    asyncio.run(measure(parser.parse_args().reads))


if __name__ == "__main__":
    main()
