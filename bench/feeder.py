"""What the MQTT feeder costs the deciding process: its hand-over of one feed's notes, timed.

The feeder thread (bridge/outward/mqtt.py) wakes every FEED_INTERVAL_S and turns the notes the
decision worker queued into pipe lines for the publisher process. That work runs under the
daemon's GIL in one run: a decision coming back from its fsync or log write during it waits it
out. This times the hand-over of one feed (rate × FEED_INTERVAL_S decision notes and one door
event) with nothing else running, so the time is the GIL the feeder holds. Run it against an
older tree to compare (it uses that tree's feeder when it has no `_take_notes`):

    python bench/feeder.py                          # 100/s and 1,000/s, 2,000 feeds each
    PYTHONPATH=/path/to/old/tree python bench/feeder.py

Prints one line per rate and the figures as the last line (JSON). Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.config.observe import MqttSection  # noqa: E402
from bridge.outward.mqtt import FEED_INTERVAL_S, DecisionNote, DoorEventNote, MqttPublisher  # noqa: E402
from verifier.types import AccessDecision, Decision, Reason, Source  # noqa: E402

T0 = datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc)


def hand_over(p: MqttPublisher) -> bytes:
    """One feed's notes → the bytes for the pipe, as the tree under test does it."""
    if hasattr(p, "_take_notes"):
        return p._take_notes().encode()
    lines: list[str] = []  # the feeder before summary rows (1624047 and earlier)
    while p._notes:
        lines.extend(p._encode(p._notes.popleft()))
    return "".join(lines).encode()


def one_rate(rate: float, feeds: int) -> dict[str, float]:
    p = MqttPublisher(MqttSection(enabled=True), "BENCH", lambda: {}, reader_door={f"R{i}": f"door{i}" for i in range(8)},
                      clock=lambda: T0)
    per_feed = max(1, round(rate * FEED_INTERVAL_S))
    decisions = [AccessDecision(Decision.GRANT if i % 3 else Decision.DENY, None if i % 3 else Reason.NO_GRANT,
                                f"R{i % 8}", Source.CARD, cache_version=12) for i in range(per_feed)]
    times, size = [], 0
    gc.collect()
    for f in range(feeds):
        at = T0 + timedelta(seconds=f * FEED_INTERVAL_S)
        for i, d in enumerate(decisions):
            p._notes.append(DecisionNote(d, 0.4 + i / 100, at + timedelta(microseconds=i * 997)))
        p._notes.append(DoorEventNote("door1", "DOOR_OPENED", at, None))
        t = time.perf_counter()
        size = len(hand_over(p))
        times.append(time.perf_counter() - t)
    times.sort()
    median = statistics.median(times)
    return {"rate": rate, "notes_per_feed": per_feed + 1, "feed_us_median": round(median * 1e6, 1),
            "feed_us_p99": round(times[int(len(times) * 0.99)] * 1e6, 1),
            "us_per_note": round(median / (per_feed + 1) * 1e6, 2), "bytes_per_feed": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0])
    ap.add_argument("--feeds", type=int, default=2000)
    args = ap.parse_args()
    out = []
    for rate in args.rates:
        r = one_rate(rate, args.feeds)
        out.append(r)
        print(f"{rate:g}/s: {r['notes_per_feed']} notes a feed, hand-over {r['feed_us_median']} µs median "
              f"(p99 {r['feed_us_p99']} µs) = {r['us_per_note']} µs a note, {r['bytes_per_feed']} bytes", file=sys.stderr)
    print(json.dumps({"rates": out, "rows": hasattr(MqttPublisher, "_take_notes"), "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
