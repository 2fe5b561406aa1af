"""The MQTT publisher process's CPU a message, at QoS 0 and QoS 1 (issue 18).

The real `python -m bridge.outward.mqtt_child`, a real mosquitto on loopback (errors-only log),
fed the daemon's pipe lines at a steady rate, in the feeder's 50 ms hand-overs: each feed's
decision summaries as one line of rows, which the child turns into payloads
(bridge/outward/summary_rows.py). CPU is read from /proc for the child alone, from the first
message to one second after the last. The QoS is the batch's, as `[mqtt] decision_qos` sets it
for summaries. Runs alternate between the QoS values, so a slow
minute of a shared machine lands on both. Prints one line per run and the figures as the last
line (JSON). Not a test: nothing here asserts.

    python bench/mqtt_publisher.py                       # 15,000 messages at 1,000/s, 2 runs each
    python bench/mqtt_publisher.py --rate 100 --messages 3000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.outward.mqtt_child import SessionSettings  # noqa: E402
from bridge.outward.summary_rows import batch_line  # noqa: E402
from bridge.upstream.background import start_piped_child  # noqa: E402
from tests.support.mqtt_broker import Broker  # noqa: E402

FEED_S = 0.05  # bridge/outward/mqtt.py FEED_INTERVAL_S
ROW = [1796317200.0, "R1", "main", "GRANT", None, "CARD", "cache", 12, False, 0.51]  # summary_rows.FIELDS


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(qos: int, messages: int, rate: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="door-bridge-mqttpub-") as tmp:
        broker = Broker(Path(tmp) / "broker", verbose=False).start()
        settings = SessionSettings(host="127.0.0.1", port=broker.port, client_id="bench-publisher", keepalive_s=30,
                                   status_topic="door-bridge/BENCH/status", queue_size=100_000,
                                   reconnect_min_s=0.5, reconnect_max_s=5.0)
        child = start_piped_child("bridge.outward.mqtt_child", settings.to_json().encode() + b"\n")
        try:
            assert child.stdout is not None and child.stdin is not None
            for _ in range(20):  # its reports, one JSON object a line, until it says connected
                if b'"connected"' in child.stdout.readline():
                    break
            else:
                raise RuntimeError("the publisher did not connect")
            per_feed = max(1, round(rate * FEED_S))
            start_cpu, t0 = cpu_s(child.pid), time.monotonic()
            sent = 0
            while sent < messages:
                n = min(per_feed, messages - sent)
                child.stdin.write(batch_line("door-bridge/BENCH/decision", qos, [ROW] * n).encode())
                child.stdin.flush()
                sent += n
                time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
            time.sleep(1.0)
            used = cpu_s(child.pid) - start_cpu
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(10)
            broker.kill()
    return {"qos": qos, "messages": messages, "cpu_s": round(used, 3), "us_per_message": round(used / messages * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=15_000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    runs: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(args.runs):
        for qos in (1, 0):
            r = one_run(qos, args.messages, args.rate)
            runs[qos].append(r["us_per_message"])
            print(f"QoS {qos}: {r['messages']} messages at {args.rate:g}/s, publisher CPU {r['cpu_s']} s = "
                  f"{r['us_per_message']} µs a message", file=sys.stderr)
    print(json.dumps({"rate": args.rate, "messages": args.messages, "runs": args.runs,
                      "us_per_message_qos1": statistics.median(runs[1]), "us_per_message_qos0": statistics.median(runs[0]),
                      "each_qos1": runs[1], "each_qos0": runs[0], "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
