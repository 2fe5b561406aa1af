"""Issue 18's A/B: decisions' p99 in bench/load.py with the outward tools off and on.

Interleaved rounds (off, on with a 1 s scrape, on with a 15 s scrape, in turn, at each rate), each
arm a fresh `bench/load.py` process (fresh daemon, fresh mosquitto), so a slow minute of a shared
machine lands on every arm rather than on one. "On" is metrics served over HTTP and scraped, plus
MQTT to a real mosquitto with a subscriber (bench/load.py --observe). The 1-minute load average is
recorded before and after every run: on a shared 2-core machine it says which rounds to distrust.

Prints one line per run and a table of medians; writes every run as a JSON line to --out.
Not a test: nothing here asserts.

    python bench/observe_ab.py                           # 100/s for 20 s and 1,000/s for 20 s, 3 rounds
    python bench/observe_ab.py --rounds 5 --rates 100 --out bench/results/observe_ab.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARMS: dict[str, list[str]] = {
    "off": [],
    "on_scrape_1s": ["--observe", "--scrape-s", "1"],
    "on_scrape_15s": ["--observe", "--scrape-s", "15"],
}


def run(rate: float, seconds: float, arm: str) -> dict[str, Any]:
    load_before = os.getloadavg()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--rate", str(rate),
                           "--seconds", str(seconds), *ARMS[arm]], capture_output=True, text=True, cwd=ROOT)
    load_after = os.getloadavg()
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {"error": proc.stderr[-600:]}
    return {"rate": rate, "seconds": seconds, "arm": arm, "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after], "summary": summary}


def medians(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| rate /s | arm | runs | p50 ms (median) | p99 ms (each) | p99 ms (median) | p99 on/off | load 1m |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rate in sorted({r["rate"] for r in runs}):
        p99_off = None
        for arm in ARMS:
            mine = [r for r in runs if r["rate"] == rate and r["arm"] == arm and r["summary"].get("p99_ms") is not None]
            if not mine:
                continue
            p99s = [r["summary"]["p99_ms"] for r in mine]
            p99 = statistics.median(p99s)
            p99_off = p99 if arm == "off" else p99_off
            ratio = f"{p99 / p99_off:.2f}" if p99_off and arm != "off" else "-"
            loads = [r["load_before"][0] for r in mine] + [r["load_after"][0] for r in mine]
            lines.append(f"| {rate:g} | {arm} | {len(mine)} | {statistics.median(r['summary']['p50_ms'] for r in mine)} | "
                         f"{', '.join(map(str, p99s))} | {p99} | {ratio} | {min(loads):.2f}-{max(loads):.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--out", type=Path, help="append every run as a JSON line here")
    args = ap.parse_args()
    runs = []
    for rate in args.rates:
        for round_ in range(1, args.rounds + 1):
            for arm in args.arms:
                r = {"round": round_, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     **run(rate, args.seconds, arm)}
                runs.append(r)
                s = r["summary"]
                print(f"{rate:g}/s round {round_} {arm:14s} load {r['load_before'][0]:.2f}→{r['load_after'][0]:.2f} "
                      f"p50 {s.get('p50_ms')} p99 {s.get('p99_ms')} max {s.get('max_ms')} ms; cpu {s.get('cpu_percent')} %; "
                      f"dropped {s.get('dropped')}; observed {s.get('observed')}", flush=True)
                if args.out:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(r) + "\n")
    print("\n".join(medians(runs)))


if __name__ == "__main__":
    main()
