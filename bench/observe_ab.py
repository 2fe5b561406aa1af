"""Issue 18's A/B: decisions' p99 in bench/load.py with the outward tools off and on.

Interleaved rounds (off, on with a 1 s scrape, on with a 15 s scrape, in turn, at each rate), each
arm a fresh `bench/load.py` process (fresh daemon, fresh mosquitto), so a slow minute of a shared
machine lands on every arm rather than on one. "On" is metrics served over HTTP and scraped, plus
MQTT to a real mosquitto with a subscriber (bench/load.py --observe). The 1-minute load average is
recorded before and after every run: on a shared 2-core machine it says which rounds to distrust.
One warm-up run comes first and is not counted (`--warmup`); every second round runs the arms in
reverse (`--order`). bench/load.py starts the scans once the daemon's metrics and MQTT helpers
are up, so "on" is their cost while they run, not their start.

Prints one line per run, a table of medians, and a table of the runs pooled: every scan-to-relay
latency of an arm's rounds in one sample, its p99 against the "off" arm's, and a 95 % interval for
that ratio from a bootstrap over rounds (the same rounds drawn for both arms, so each draw keeps
the pairing of arms that ran side by side). The median of per-run p99s swings 2-4x between
identical runs on a shared machine; the pooled ratio and its interval say what the rounds show
and how sure that is. Writes every run (without its raw latencies) as a JSON line to --out.
Not a test: nothing here asserts.

    python bench/observe_ab.py                           # 100/s for 20 s and 1,000/s for 20 s, 3 rounds
    python bench/observe_ab.py --rounds 5 --rates 100 --out bench/results/observe_ab.jsonl
    python bench/observe_ab.py --rates 100 --arms off mqtt_only metrics_only_scrape_1s on_scrape_1s
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARMS: dict[str, list[str]] = {
    "off": [],
    "on_scrape_1s": ["--observe", "--scrape-s", "1"],
    "on_scrape_15s": ["--observe", "--scrape-s", "15"],
    # Each tool alone, to tell their shares of the rise at 100/s apart (issue 18).
    "mqtt_only": ["--observe", "mqtt"],
    "metrics_only_scrape_1s": ["--observe", "metrics", "--scrape-s", "1"],
    "metrics_only_scrape_15s": ["--observe", "metrics", "--scrape-s", "15"],
}
DEFAULT_ARMS = ["off", "on_scrape_1s", "on_scrape_15s"]


def run(rate: float, seconds: float, arm: str) -> tuple[dict[str, Any], list[float]]:
    """One bench/load.py process: its summary, and its raw scan-to-relay latencies (ms)."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="observe-ab-") as tmp:
        raw = Path(tmp) / "latencies.json"
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--rate", str(rate),
                               "--seconds", str(seconds), "--latencies", str(raw), *ARMS[arm]],
                              capture_output=True, text=True, cwd=ROOT)
        latencies = json.loads(raw.read_text())["scan_to_relay_ms"] if raw.exists() else []
    load_after = os.getloadavg()
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {"error": proc.stderr[-600:]}
    return ({"rate": rate, "seconds": seconds, "arm": arm, "load_before": [round(x, 2) for x in load_before],
             "load_after": [round(x, 2) for x in load_after], "summary": summary}, latencies)


def pooled(runs: list[dict[str, Any]], latencies: dict[tuple[float, str, int], list[float]],
           draws: int = 2000, seed: int = 18) -> list[str]:
    """Each arm's rounds pooled; the on/off p99 ratio with a paired bootstrap over rounds."""
    import numpy as np  # bench only (matplotlib's own dependency, bench/report.py)

    rng = np.random.default_rng(seed)
    lines = ["| rate /s | arm | rounds | scans | pooled p50 ms | pooled p99 ms | p99 on/off | 95 % interval "
             "| cpu µs/scan, daemon + children (median) | cpu on/off |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rate in sorted({r["rate"] for r in runs}):
        arms = [a for a in ARMS if any(x["arm"] == a and x["rate"] == rate for x in runs)]
        # A round counts only if every arm of it produced latencies (a failed run drops its round).
        rounds = sorted(k for k in {x["round"] for x in runs if x["rate"] == rate}
                        if all(latencies.get((rate, a, k)) for a in arms))
        if not rounds or "off" not in arms:
            continue
        samples = {a: [np.asarray(latencies[(rate, a, k)]) for k in rounds] for a in arms}
        # The daemon's CPU with its children's: the MQTT publisher and the metrics exposition are
        # child processes, and the daemon's own figure alone left them out.
        cpu = {a: statistics.median(_total_cpu(x["summary"]) for x in runs
                                    if x["rate"] == rate and x["arm"] == a and x["round"] in rounds) for a in arms}
        p99 = {a: float(np.percentile(np.concatenate(samples[a]), 99)) for a in arms}
        picks = rng.integers(0, len(rounds), size=(draws, len(rounds)))
        for a in arms:
            pool = np.concatenate(samples[a])
            cell, interval, cpu_ratio = "-", "-", "-"
            if a != "off":
                ratios = [np.percentile(np.concatenate([samples[a][i] for i in pick]), 99)
                          / np.percentile(np.concatenate([samples["off"][i] for i in pick]), 99) for pick in picks]
                lo, hi = np.percentile(ratios, [2.5, 97.5])
                cell, interval = f"{p99[a] / p99['off']:.2f}", f"{lo:.2f}-{hi:.2f}"
                cpu_ratio = f"{cpu[a] / cpu['off']:.2f}" if cpu["off"] else "-"
            lines.append(f"| {rate:g} | {a} | {len(rounds)} | {pool.size} | {np.percentile(pool, 50):.2f} | "
                         f"{p99[a]:.2f} | {cell} | {interval} | {cpu[a]:g} | {cpu_ratio} |")
    return lines


def _total_cpu(summary: dict[str, Any]) -> float:
    """µs per scan, daemon and children; a run recorded before children were counted gives its own."""
    total = summary.get("total_cpu_us_per_scan")
    return float(total if total is not None else summary.get("cpu_us_per_scan") or 0)


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
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=DEFAULT_ARMS)
    ap.add_argument("--out", type=Path, help="append every run as a JSON line here")
    ap.add_argument("--warmup", type=int, default=1,
                    help="runs of the first arm before round 1, printed and not counted (default 1): the first "
                         "run after the machine sat idle had the worst p99 of its A/B in 2 of 2 passes of "
                         "2026-12-04 (18.5 and 44 ms against 2-6 ms), whichever arm it was")
    ap.add_argument("--order", choices=["alternate", "fixed"], default="alternate",
                    help="alternate (default): every second round runs the arms in reverse, so a machine "
                         "that speeds up or slows down over the pass weighs on every arm alike (a fixed "
                         "order put the third arm below \"off\" in 7 of the 8 rounds of a pass, 0.83 (0.73-0.96))")
    args = ap.parse_args()
    runs = []
    latencies: dict[tuple[float, str, int], list[float]] = {}
    for n in range(args.warmup):
        one, _ = run(args.rates[0], args.seconds, args.arms[0])
        s = one["summary"]
        print(f"warm-up {n + 1} ({args.rates[0]:g}/s {args.arms[0]}, not counted): p99 {s.get('p99_ms')} "
              f"max {s.get('max_ms')} ms", flush=True)
    for rate in args.rates:
        for round_ in range(1, args.rounds + 1):
            order = args.arms if args.order == "fixed" or round_ % 2 else args.arms[::-1]
            for arm in order:
                one, latencies[(rate, arm, round_)] = run(rate, args.seconds, arm)
                r = {"round": round_, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **one}
                runs.append(r)
                s = r["summary"]
                print(f"{rate:g}/s round {round_} {arm:14s} load {r['load_before'][0]:.2f}→{r['load_after'][0]:.2f} "
                      f"p50 {s.get('p50_ms')} p99 {s.get('p99_ms')} max {s.get('max_ms')} ms; cpu {s.get('cpu_percent')} % "
                      f"({s.get('cpu_us_per_scan')} µs/scan, children {s.get('children_cpu_us_per_scan')}); "
                      f"dropped {s.get('dropped')}; observed {s.get('observed')}", flush=True)
                if args.out:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(r) + "\n")
    print("\n".join(medians(runs)))
    print()
    print("\n".join(pooled(runs, latencies)))


if __name__ == "__main__":
    main()
